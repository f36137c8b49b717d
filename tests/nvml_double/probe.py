"""Runs inside a child process whose LD_LIBRARY_PATH points pynvml at the NVML double.

Usage: probe.py SCENARIO PARAMS_JSON; prints one JSON line (the scenario's answer). Each scenario
drives the unmodified pynvml (or flopwatch's NvmlBackend over it) and reports what it saw; the
tests in this folder and tests/agent/backends/nvml judge the answers. Time is stepped with the
double's test-only nvmlDoubleSetTime (NVML_DOUBLE_FROZEN=1), so nothing sleeps.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import pynvml as nv

from flopwatch.agent.backends.nvml.backend import NvmlBackend


def _lib() -> Any:
    lib = nv.nvmlLib
    lib.nvmlDoubleSetTime.argtypes = [ctypes.c_double]
    lib.nvmlDoubleTraceTime.restype = ctypes.c_double
    return lib


def set_time(t: float) -> None:
    rc = _lib().nvmlDoubleSetTime(t)
    if rc != 0:
        raise RuntimeError(f"nvmlDoubleSetTime failed: {rc} (is NVML_DOUBLE_FROZEN set?)")


def failure(e: BaseException) -> dict[str, Any]:
    return {
        "exc": type(e).__name__,
        "value": getattr(e, "value", None),
        "nvml_error": isinstance(e, nv.NVMLError),
        "text": str(e),
    }


def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), or a description of what it raised."""
    try:
        return {"ok": fn(*args)}
    except Exception as e:
        return failure(e)


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def metrics(s1: Any, s2: Any, ids: list[int], version: int | None = None) -> Any:
    mg = nv.c_nvmlGpmMetricsGet_t()
    mg.version = nv.NVML_GPM_METRICS_GET_VERSION if version is None else version
    mg.sample1, mg.sample2 = s1, s2
    mg.numMetrics = len(ids)
    for i, m in enumerate(ids):
        mg.metrics[i].metricId = m
    try:
        nv.nvmlGpmMetricsGet(mg)
    except nv.NVMLError as e:
        return failure(e)
    return [
        [
            int(mg.metrics[i].metricId),
            int(mg.metrics[i].nvmlReturn),
            float(mg.metrics[i].value),
            text(mg.metrics[i].metricInfo.shortName or b""),
        ]
        for i in range(len(ids))
    ]


def gpm_window(take: Callable[[Any], Any], a: float, b: float, ids: list[int]) -> Any:
    """Samples at trace times a and b through `take(sample)`, then the metrics between them."""
    s1, s2 = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    try:
        set_time(a)
        got = attempt(take, s1)
        if "ok" not in got:
            return got
        set_time(b)
        take(s2)
        return metrics(s1, s2, ids)
    finally:
        nv.nvmlGpmSampleFree(s1)
        nv.nvmlGpmSampleFree(s2)


# -- scenarios -----------------------------------------------------------------------------------


def identity(p: dict[str, Any]) -> Any:
    out: dict[str, Any] = {
        "pynvml": nv.__file__,
        "count": nv.nvmlDeviceGetCount(),
        "driver": text(nv.nvmlSystemGetDriverVersion()),
        "gpus": [],
    }
    for i in range(out["count"]):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        out["gpus"].append(
            {
                "name": text(nv.nvmlDeviceGetName(h)),
                "uuid": text(nv.nvmlDeviceGetUUID(h)),
                "serial": text(nv.nvmlDeviceGetSerial(h)),
                "cc": list(nv.nvmlDeviceGetCudaComputeCapability(h)),
                "cores": nv.nvmlDeviceGetNumGpuCores(h),
                "sms": nv.nvmlDeviceGetAttributes(h).multiprocessorCount,
                "max_sm_clock": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
                "mig_mode": list(nv.nvmlDeviceGetMigMode(h)),
                "gpm_supported": nv.nvmlGpmQueryDeviceSupport(h).isSupportedDevice,
                "memory_total": nv.nvmlDeviceGetMemoryInfo(h).total,
            }
        )
    return out


def gpm(p: dict[str, Any]) -> Any:
    """Metrics `ids` of GPU `gpu` over each trace-time window [a, b]."""
    h = nv.nvmlDeviceGetHandleByIndex(p.get("gpu", 0))
    return [
        gpm_window(lambda s: nv.nvmlGpmSampleGet(h, s), a, b, p["ids"]) for a, b in p["windows"]
    ]


def at_times(p: dict[str, Any]) -> Any:
    """What a GPU shows at each trace time: clock, energy, processes, samples since `since_us`."""
    h = nv.nvmlDeviceGetHandleByIndex(p.get("gpu", 0))
    out = []
    for t in p["times"]:
        set_time(t)
        procs = attempt(nv.nvmlDeviceGetComputeRunningProcesses, h)
        putil = attempt(nv.nvmlDeviceGetProcessUtilization, h, p.get("since_us", 0))
        samples = attempt(
            nv.nvmlDeviceGetSamples, h, nv.NVML_GPU_UTILIZATION_SAMPLES, p.get("since_us", 0)
        )
        out.append(
            {
                "t": _lib().nvmlDoubleTraceTime(),
                "clock": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
                "energy": nv.nvmlDeviceGetTotalEnergyConsumption(h),
                "procs": [
                    [q.pid, q.usedGpuMemory, q.gpuInstanceId, q.computeInstanceId]
                    for q in procs["ok"]
                ]
                if "ok" in procs
                else procs,
                "putil": [
                    [int(s.pid), int(s.timeStamp), int(s.smUtil), int(s.memUtil)]
                    for s in putil["ok"]
                ]
                if "ok" in putil
                else putil,
                "samples": [[int(s.timeStamp), int(s.sampleValue.uiVal)] for s in samples["ok"][1]]
                if "ok" in samples
                else samples,
            }
        )
    return out


def trace_time(p: dict[str, Any]) -> Any:
    return _lib().nvmlDoubleTraceTime()


def processes(p: dict[str, Any]) -> Any:
    """Each running-processes entry point of pynvml at trace time `t`."""
    set_time(p["t"])
    h = nv.nvmlDeviceGetHandleByIndex(0)
    out = {}
    for name in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
    ):
        fn = getattr(nv, name, None)
        if fn is None:
            out[name] = {"exc": "absent from this pynvml"}
            continue
        got = attempt(fn, h)
        out[name] = [[q.pid, q.usedGpuMemory] for q in got["ok"]] if "ok" in got else got
    return out


def errors(p: dict[str, Any]) -> Any:
    """How the double answers misuse, as the real driver does."""
    h0 = nv.nvmlDeviceGetHandleByIndex(0)
    lib = _lib()
    out: dict[str, Any] = {}
    s1, s2 = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
    out["live_after_alloc"] = lib.nvmlDoubleLiveSamples()
    out["metrics_unsampled"] = metrics(s1, s2, [7])
    set_time(p["t"])
    nv.nvmlGpmSampleGet(h0, s1)
    set_time(p["t"] + 0.05)
    nv.nvmlGpmSampleGet(h0, s2)
    out["too_close"] = metrics(s1, s2, [7])
    set_time(p["t"] + 1.0)
    nv.nvmlGpmSampleGet(h0, s2)
    out["metrics_bad_version"] = metrics(s1, s2, [7], version=2)
    sup = nv.c_nvmlGpmSupport_t()
    sup.version = 2
    out["support_bad_version"] = lib.nvmlGpmQueryDeviceSupport(h0, ctypes.byref(sup))
    out["metrics_reversed"] = metrics(s2, s1, [7])
    out["metrics_unknown_id"] = metrics(s1, s2, [0, 14, 476, 477])
    if nv.nvmlDeviceGetCount() > 1:
        nv.nvmlGpmSampleGet(nv.nvmlDeviceGetHandleByIndex(1), s2)
        out["metrics_two_gpus"] = metrics(s1, s2, [7])
    out["free"] = attempt(nv.nvmlGpmSampleFree, s1)
    out["double_free"] = attempt(nv.nvmlGpmSampleFree, s1)
    nv.nvmlGpmSampleFree(s2)
    out["live_after_free"] = lib.nvmlDoubleLiveSamples()
    out["bad_index"] = attempt(nv.nvmlDeviceGetHandleByIndex, 64)
    out["bad_handle"] = attempt(nv.nvmlDeviceGetName, nv.c_nvmlDevice_t())
    nv.nvmlShutdown()
    out["after_shutdown"] = attempt(nv.nvmlDeviceGetCount)
    nv.nvmlInit()
    return out


def mig(p: dict[str, Any]) -> Any:
    """The MIG devices of GPU 0, their GPM figures over [a, b] and processes at a."""
    h = nv.nvmlDeviceGetHandleByIndex(0)
    a, b, ids = p["a"], p["b"], p["ids"]
    out: dict[str, Any] = {"mode": list(nv.nvmlDeviceGetMigMode(h)), "slots": [], "gi": {}}
    out["whole_gpu_sample"] = gpm_window(lambda s: nv.nvmlGpmSampleGet(h, s), a, b, ids)
    out["putil"] = attempt(nv.nvmlDeviceGetProcessUtilization, h, 0)
    for i in range(nv.nvmlDeviceGetMaxMigDeviceCount(h)):
        got = attempt(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
        if "ok" not in got:
            out["slots"].append(got)
            continue
        m = got["ok"]
        gi = nv.nvmlDeviceGetGpuInstanceId(m)
        set_time(a)
        out["slots"].append(
            {
                "uuid": text(nv.nvmlDeviceGetUUID(m)),
                "name": text(nv.nvmlDeviceGetName(m)),
                "gi": gi,
                "ci": nv.nvmlDeviceGetComputeInstanceId(m),
                "sms": nv.nvmlDeviceGetAttributes(m).multiprocessorCount,
                "procs": [
                    [q.pid, q.gpuInstanceId, q.computeInstanceId]
                    for q in nv.nvmlDeviceGetComputeRunningProcesses(m)
                ],
                "gpm": gpm_window(lambda s, m=m: nv.nvmlGpmSampleGet(m, s), a, b, ids),
            }
        )
        if str(gi) not in out["gi"]:
            out["gi"][str(gi)] = gpm_window(
                lambda s, gi=gi: nv.nvmlGpmMigSampleGet(h, gi, s), a, b, ids
            )
    set_time(a)
    out["parent_procs"] = [
        [q.pid, q.gpuInstanceId, q.computeInstanceId]
        for q in nv.nvmlDeviceGetComputeRunningProcesses(h)
    ]
    return out


def conf_compute(p: dict[str, Any]) -> Any:
    h = nv.nvmlDeviceGetHandleByIndex(0)
    st = nv.nvmlSystemGetConfComputeState()
    out: dict[str, Any] = {"state": [st.environment, st.ccFeature, st.devToolsMode]}
    got = attempt(nv.nvmlDeviceGetConfComputeGpuAttestationReport, h, bytes.fromhex(p["nonce"]))
    if "ok" in got:
        r = got["ok"]
        out["report"] = bytes(r.attestationReport[: r.attestationReportSize]).hex()
        out["cec"] = bytes(r.cecAttestationReport[: r.cecAttestationReportSize]).hex()
        out["cec_present"] = r.isCecAttestationReportPresent
    else:
        out["report"] = got
    cert = attempt(nv.nvmlDeviceGetConfComputeGpuCertificate, h)
    out["cert"] = (
        bytes(cert["ok"].attestationCertChain[: cert["ok"].attestationCertChainSize]).decode()
        if "ok" in cert
        else cert
    )
    return out


def backend(p: dict[str, Any]) -> Any:
    """flopwatch's NvmlBackend over the real pynvml, on time stepped through the double.

    Starts at trace time `start`, runs `intervals` intervals of `interval_s` (trace seconds at
    speed 1) and polls the clock every `poll_s` in between, as the poller thread would."""
    epoch, speed = float(os.environ["NVML_DOUBLE_EPOCH"]), float(os.environ["NVML_DOUBLE_SPEED"])
    start, poll_ns = float(p["start"]), round(p.get("poll_s", 0.1) * 1e9)
    t0 = float(p["trace_t0"])
    now = [0]  # monotonic ns since the start
    be: NvmlBackend

    def trace_t() -> float:
        return start + now[0] / 1e9

    def mono() -> int:
        return 10**12 + now[0]

    def wall() -> int:
        return round((epoch + (trace_t() - t0) / speed) * 1e9)

    def sleep(seconds: float) -> None:
        end = now[0] + round(seconds * 1e9)
        while now[0] < end:
            now[0] = min(end, now[0] + poll_ns)
            set_time(trace_t())
            if now[0] < end:
                be.poll_clocks()

    nv.nvmlInit()  # keeps the library initialised (refcount) to read the double's counters
    set_time(start)
    out: dict[str, Any] = {"gpus": [], "intervals": []}
    try:
        be = NvmlBackend(
            interval_s=p.get("interval_s", 1.0),
            clock_thread=False,
            sleep=sleep,
            monotonic_ns=mono,
            time_ns=wall,
        )
    except Exception as e:
        out["raised"] = failure(e)
        return out
    try:
        out["gpus"] = [
            {
                "uuid": g.uuid,
                "name": g.name,
                "sms": g.sm_count,
                "mig": g.mig_instance,
                "serial": g.serial,
            }
            for g in be.gpus()
        ]
        for _ in range(p["intervals"]):
            rs = be.next_readings() or []
            out["intervals"].append(
                [
                    {
                        "uuid": r.gpu.uuid,
                        "mig": r.gpu.mig_instance,
                        "sms": r.gpu.sm_count,
                        "start": (r.start_ns / 1e9 - epoch) * speed + t0,
                        "end": (r.end_ns / 1e9 - epoch) * speed + t0,
                        "pipe_busy": None
                        if r.pipe_busy is None
                        else {k.value: v for k, v in r.pipe_busy.items()},
                        "clock_mhz_s": r.sm_clock_mhz_s,
                        "clock_samples": r.clock_samples,
                        "energy_mj": r.energy_mj,
                        "utilization": r.utilization,
                        "processes": [[s.pid, s.share] for s in r.processes],
                        "error": r.error,
                        "cause": r.cause.value,
                    }
                    for r in rs
                ]
            )
        if "nonce" in p:
            nonce = bytes.fromhex(p["nonce"])
            got = attempt(be.hardware_bindings, nonce)
            out["bindings"] = (
                [
                    [b.status.value, b.detail, b.report.hex(), b.cert_chain.decode()]
                    for b in got["ok"]
                ]
                if "ok" in got
                else got
            )
    except Exception as e:
        out["raised"] = failure(e)
    finally:
        be.close()
    out["live_samples_after_close"] = _lib().nvmlDoubleLiveSamples()
    return out


def layouts(p: dict[str, Any]) -> Any:
    """(size in the double, ctypes size in this pynvml) of each struct both know."""
    lib = _lib()
    lib.nvmlDoubleSizeof.argtypes = [ctypes.c_char_p]
    lib.nvmlDoubleSizeof.restype = ctypes.c_uint
    pairs = {
        "nvmlProcessInfo_t": "c_nvmlProcessInfo_t",
        "nvmlProcessUtilizationSample_t": "c_nvmlProcessUtilizationSample_t",
        "nvmlSample_t": "c_nvmlSample_t",
        "nvmlValue_t": "c_nvmlValue_t",
        "nvmlDeviceAttributes_t": "c_nvmlDeviceAttributes",
        "nvmlMemory_t": "c_nvmlMemory_t",
        "nvmlMemory_v2_t": "c_nvmlMemory_v2_t",
        "nvmlGpmSupport_t": "c_nvmlGpmSupport_t",
        "nvmlGpmMetric_t": "c_nvmlGpmMetric_t",
        "nvmlConfComputeSystemState_t": "c_nvmlConfComputeSystemState_t",
        "nvmlConfComputeGpuAttestationReport_t": "c_nvmlConfComputeGpuAttestationReport_t",
        "nvmlConfComputeGpuCertificate_t": "c_nvmlConfComputeGpuCertificate_t",
    }
    out = {
        c: [lib.nvmlDoubleSizeof(c.encode()), ctypes.sizeof(getattr(nv, py))]
        for c, py in pairs.items()
    }
    out["nvmlGpmMetricsGet_t header"] = [
        lib.nvmlDoubleSizeof(b"nvmlGpmMetricsGet_t header"),
        nv.c_nvmlGpmMetricsGet_t.metrics.offset,
    ]
    return out


def init_only(p: dict[str, Any]) -> Any:
    return attempt(nv.nvmlInit)


SCENARIOS: dict[str, Callable[[dict[str, Any]], Any]] = {
    f.__name__: f
    for f in (
        identity,
        gpm,
        at_times,
        trace_time,
        processes,
        errors,
        mig,
        conf_compute,
        backend,
        init_only,
        layouts,
    )
}

if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    if name not in ("init_only", "backend"):
        nv.nvmlInit()
    print(json.dumps(SCENARIOS[name](params)))
