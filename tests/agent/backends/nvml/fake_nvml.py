"""A fake pynvml module over simulated GPUs and a fake clock, for the NVML backend tests.

Names and call signatures follow the installed nvidia-ml-py
(tests/agent/backends/nvml/test_backend.py checks them against the real module). Handles: a whole
GPU is its index (int); a MIG device is the tuple (GPU index, slot). Several FakeMigs with one
`gpu_instance` are compute instances of one GPU instance; the GPU instance's GPM figure
(nvmlGpmMigSampleGet) is their SM-weighted activity over the GPU instance's SMs (`gi_sms`).

Time is fake: `FakeTime.sleep` advances a monotonic clock in 0.1 s steps and calls `on_tick`
(the backend's clock poll) at each step, so every test is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from flopwatch.agent.backends.nvml.backend import NvmlBackend

MONO0 = 50 * 10**9  # the fake monotonic clock starts here
WALL0 = 1_700_000_000 * 10**9  # unix ns at MONO0
SEC = 10**9


class FakeTime:
    """Monotonic and wall clocks that move only when the backend sleeps."""

    def __init__(self, step_s: float = 0.1, overshoot_s: float = 0.0) -> None:
        self.mono = MONO0
        self.step_ns = round(step_s * 1e9)
        self.overshoot_ns = round(overshoot_s * 1e9)
        self.on_tick: Callable[[], None] = lambda: None

    def monotonic_ns(self) -> int:
        return self.mono

    def time_ns(self) -> int:
        return WALL0 + self.mono - MONO0

    def sleep(self, seconds: float) -> None:
        end = self.mono + round(seconds * 1e9) + self.overshoot_ns
        while self.mono < end:
            self.mono = min(end, self.mono + self.step_ns)
            self.on_tick()


class FakeLibraryMismatchError(Exception):
    """What nvidia-ml-py >= 12.575 raises from an unversioned wrapper whose symbol the driver
    lacks: a plain Exception, not an NVMLError."""


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"fake NVML error {self.value}"


@dataclass
class FakeMig:
    """One MIG device (a compute instance): its GPU instance id, its SMs, its GPM percents per
    metric id at second t."""

    gpu_instance: int
    sm_count: int
    busy: Callable[[float], dict[int, float]]
    procs: list[int] = field(default_factory=list)


@dataclass
class FakeGpu:
    """One simulated GPU. `busy(t)` gives GPM percents per metric id at monotonic second t;
    `util(t)` the driver's kernel-busy percent at t (utilization samples, no-GPM GPUs)."""

    busy: Callable[[float], dict[int, float]]
    clock: Callable[[float], float]
    power_w: float = 500.0
    gpm: bool = True
    cc: tuple[int, int] = (9, 0)
    sm_count: int = 132
    procs: list[int] = field(default_factory=list)
    proc_sm: dict[int, float] = field(default_factory=dict)  # pid -> SM % per sample
    fail_clock: bool = False
    migs: list[FakeMig] | None = None  # None: MIG mode off
    util: Callable[[float], float] = lambda t: 0.0
    util_period_s: float = 0.25  # the driver's utilization sample period
    util_phase_s: float = 0.0  # where the sample grid lies relative to the start
    util_until_s: float | None = None  # the driver stops sampling after this second
    util_samples: bool = True  # False: nvmlDeviceGetSamples is NOT_SUPPORTED
    cc_report: bool = True  # False: the attestation report call is NOT_SUPPORTED
    gpm_sample_error: int | None = None  # every GPM sample fails with this code (vGPU guests)
    mig_device_gpm: bool = True  # False: nvmlGpmSampleGet(MIG device) is NOT_SUPPORTED
    gi_sms: dict[int, int] = field(default_factory=dict)  # GPU instance -> SMs (default: sum)
    failing_metrics: dict[int, int] = field(default_factory=dict)  # metric id -> nvmlReturn
    procs_v3: bool = True  # False: a driver without nvmlDeviceGetComputeRunningProcesses_v3


def fake_metrics_get() -> SimpleNamespace:
    """Stands in for pynvml's ctypes struct c_nvmlGpmMetricsGet_t."""
    metrics = [SimpleNamespace(metricId=0, value=0.0, nvmlReturn=0) for _ in range(32)]
    return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None, metrics=metrics)


class FakeNvml:
    """The parts of pynvml NvmlBackend uses, over FakeGpus and FakeTime."""

    NVMLError = FakeNVMLError
    NVMLLibraryMismatchError = FakeLibraryMismatchError
    NVML_SUCCESS = 0
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_ERROR_IN_USE = 19
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23
    NVML_ERROR_UNKNOWN = 999
    NVML_CLOCK_SM = 1
    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_UTILIZATION_SAMPLES = 1
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_CC_SYSTEM_FEATURE_ENABLED = 1
    NVML_CC_SYSTEM_DEVTOOLS_MODE_ON = 1
    NVML_CC_SYSTEM_ENVIRONMENT_PROD = 2
    c_nvmlGpmMetricsGet_t = staticmethod(fake_metrics_get)

    def __init__(self, t: FakeTime, gpus: list[FakeGpu]) -> None:
        self.t = t
        self.gpus = gpus
        self.init_error: int | None = None
        self.fail_sample: dict[int, int] = {}  # GPM sample call number (from 0) -> error code
        self.fail_metrics: set[int] = set()  # GPM metrics calls (counted from 0) that fail
        self.sample_calls = 0
        self.metrics_calls = 0
        self.requested: list[list[int]] = []  # metric ids of each nvmlGpmMetricsGet call
        self.sampled: list[Any] = []  # what each successful GPM sample read (_take_sample)
        self.sample_times: list[int] = []  # monotonic ns of each successful GPM sample
        self.gpm_queries = 0
        self.freed: list[Any] = []
        self.shutdowns = 0
        self.clock_reads = 0
        self.cc_state: SimpleNamespace | int = SimpleNamespace(
            environment=2, ccFeature=0, devToolsMode=0
        )  # an int: the error code nvmlSystemGetConfComputeState raises
        self.nonces: list[bytes] = []

    def now(self) -> float:
        return (self.t.mono - MONO0) / 1e9

    def _gpu(self, h: Any) -> FakeGpu:
        return self.gpus[h if isinstance(h, int) else h[0]]

    def _mig(self, h: tuple[int, int]) -> FakeMig:
        migs = self.gpus[h[0]].migs
        assert migs is not None
        return migs[h[1]]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return (
            f"GPU-fake-{handle}" if isinstance(handle, int) else f"MIG-fake-{handle[0]}-{handle[1]}"
        )

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        suffix = "" if isinstance(handle, int) else f" MIG {self._mig(handle).sm_count}sm"
        return ("NVIDIA H100 80GB HBM3" + suffix).encode()

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetNumGpuCores(self, device: Any) -> int:
        g = self._gpu(device)
        return g.sm_count * (64 if g.cc <= (8, 0) else 128)

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._gpu(handle).cc

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        assert type == self.NVML_CLOCK_SM
        return 1980

    def nvmlGpmQueryDeviceSupport(self, device: Any) -> SimpleNamespace:
        self.gpm_queries += 1
        return SimpleNamespace(isSupportedDevice=int(self._gpu(device).gpm))

    # -- MIG ------------------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        on = int(self._gpu(device).migs is not None)
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: int, index: int) -> tuple[int, int]:
        if index >= len(self._gpu(device).migs or ()):
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return (device, index)

    def nvmlDeviceGetGpuInstanceId(self, device: tuple[int, int]) -> int:
        return self._mig(device).gpu_instance

    def nvmlDeviceGetAttributes(self, device: tuple[int, int]) -> SimpleNamespace:
        return SimpleNamespace(multiprocessorCount=self._mig(device).sm_count, memorySizeMB=10)

    # -- GPM ------------------------------------------------------------------------------------

    def nvmlGpmSampleAlloc(self) -> SimpleNamespace:
        return SimpleNamespace(gpu=None, t=None)

    def nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        self.freed.append(gpmSample)

    def _take_sample(self, who: Any, s: SimpleNamespace) -> SimpleNamespace:
        """`who`: a GPU index, a MIG device handle (GPU index, slot), or ("gi", GPU, id)."""
        n, self.sample_calls = self.sample_calls, self.sample_calls + 1
        if n in self.fail_sample:
            raise FakeNVMLError(self.fail_sample[n])
        code = self._gpu(who if not isinstance(who, tuple) else who[-2]).gpm_sample_error
        if code is not None:
            raise FakeNVMLError(code)
        s.gpu, s.t = who, self.now()
        self.sampled.append(who)
        self.sample_times.append(self.t.mono)
        return s

    def nvmlGpmSampleGet(self, device: Any, gpmSample: SimpleNamespace) -> SimpleNamespace:
        g = self._gpu(device)
        if isinstance(device, int):
            assert g.migs is None, "a GPU in MIG mode is sampled per instance"
        elif not g.mig_device_gpm:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self._take_sample(device, gpmSample)

    def nvmlGpmMigSampleGet(
        self,
        device: int,
        gpuInstanceId: int,
        gpmSample: SimpleNamespace,
    ) -> SimpleNamespace:
        assert isinstance(device, int), "MIG GPM samples take the GPU's handle"
        assert any(m.gpu_instance == gpuInstanceId for m in self._gpu(device).migs or [])
        return self._take_sample(("gi", device, gpuInstanceId), gpmSample)

    def gpu_instance_sms(self, gpu: int, gi: int) -> int:
        migs = [m for m in self.gpus[gpu].migs or [] if m.gpu_instance == gi]
        return self.gpus[gpu].gi_sms.get(gi, sum(m.sm_count for m in migs))

    def gpm_percents(self, who: Any, t: float) -> dict[int, float]:
        if isinstance(who, int):
            return self.gpus[who].busy(t)
        if who[0] != "gi":
            return self._mig(who).busy(t)
        _, gpu, gi = who
        active: dict[int, float] = {}
        for m in self.gpus[gpu].migs or []:
            if m.gpu_instance == gi:
                for metric, pct in m.busy(t).items():
                    active[metric] = active.get(metric, 0.0) + pct * m.sm_count
        return {k: v / self.gpu_instance_sms(gpu, gi) for k, v in active.items()}

    def nvmlGpmMetricsGet(self, metricsGet: SimpleNamespace) -> SimpleNamespace:
        mg = metricsGet
        n, self.metrics_calls = self.metrics_calls, self.metrics_calls + 1
        if n in self.fail_metrics:
            raise FakeNVMLError(self.NVML_ERROR_UNKNOWN)
        assert mg.version == self.NVML_GPM_METRICS_GET_VERSION
        assert mg.sample1.gpu == mg.sample2.gpu and mg.sample1.t < mg.sample2.t
        who = mg.sample1.gpu
        gpu = self._gpu(who if not isinstance(who, tuple) else who[-2])
        percents = self.gpm_percents(who, mg.sample1.t)
        self.requested.append([m.metricId for m in mg.metrics[: mg.numMetrics]])
        for m in mg.metrics[: mg.numMetrics]:
            m.value = percents.get(m.metricId, 0.0)
            m.nvmlReturn = gpu.failing_metrics.get(m.metricId, 0)
        return mg

    # -- clock, energy, utilization, processes --------------------------------------------------

    def nvmlDeviceGetClockInfo(self, handle: int, type: int) -> int:
        assert type == self.NVML_CLOCK_SM and isinstance(handle, int)
        self.clock_reads += 1
        if self.gpus[handle].fail_clock:
            raise FakeNVMLError(self.NVML_ERROR_UNKNOWN)
        return round(self.gpus[handle].clock(self.now()))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        assert isinstance(handle, int), "NVML has no energy counter per MIG instance"
        return 1_000_000 + round(self.gpus[handle].power_w * 1000 * self.now())

    def nvmlDeviceGetSamples(self, device: int, sampling_type: int, timeStamp: int) -> Any:
        """Driver utilization samples every `util_period_s`, stamped in unix us, value = the
        percent at the middle of the period, newer than `timeStamp`."""
        assert sampling_type == self.NVML_GPU_UTILIZATION_SAMPLES
        g = self.gpus[device]
        if not g.util_samples:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        period_us = round(g.util_period_s * 1e6)
        now_us = self.t.time_ns() // 1000
        first_us = WALL0 // 1000 - 3 * period_us + round(g.util_phase_s * 1e6)  # some history
        if g.util_until_s is not None:
            now_us = min(now_us, WALL0 // 1000 + round(g.util_until_s * 1e6))
        rows = []
        ts = first_us
        while ts <= now_us:
            if ts > timeStamp:
                mid = (ts - period_us / 2) * 1000 - WALL0
                value = SimpleNamespace(uiVal=round(g.util(mid / 1e9)))
                rows.append(SimpleNamespace(timeStamp=ts, sampleValue=value))
            ts += period_us
        if not rows:
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return (self.NVML_VALUE_TYPE_UNSIGNED_INT, rows)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        if not self._gpu(handle).procs_v3:
            raise FakeLibraryMismatchError("Unversioned function called and the pyNVML version")
        return self.nvmlDeviceGetComputeRunningProcesses_v2(handle)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any) -> list[SimpleNamespace]:
        pids = self.gpus[handle].procs if isinstance(handle, int) else self._mig(handle).procs
        return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in pids]

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[SimpleNamespace]:
        if not isinstance(handle, int):
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        now_us = self.t.time_ns() // 1000
        rows = [
            SimpleNamespace(pid=pid, timeStamp=now_us - 1000, smUtil=sm, memUtil=0)
            for pid, sm in self.gpus[handle].proc_sm.items()
        ]
        rows = [r for r in rows if r.timeStamp > timeStamp]
        if not rows:
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return rows

    # -- confidential computing -----------------------------------------------------------------

    def nvmlSystemGetConfComputeState(self) -> SimpleNamespace:
        if isinstance(self.cc_state, int):
            raise FakeNVMLError(self.cc_state)
        return self.cc_state

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, device: int, c_nonce: bytes) -> Any:
        if len(c_nonce) != 32:  # pynvml copies the nonce into a c_uint8 * 32 field
            raise TypeError(f"incompatible types, c_ubyte_Array_{len(c_nonce)} instance")
        if not self.gpus[device].cc_report:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        self.nonces.append(bytes(c_nonce))
        report = (b"SPDM-report-" + bytes(c_nonce)).ljust(0x2000, b"\0")
        return SimpleNamespace(
            isCecAttestationReportPresent=0,
            attestationReportSize=12 + len(c_nonce),
            cecAttestationReportSize=0,
            nonce=bytes(c_nonce),
            attestationReport=report,
            cecAttestationReport=bytes(0x1000),
        )

    def nvmlDeviceGetConfComputeGpuCertificate(self, device: int) -> SimpleNamespace:
        chain = b"cert-chain".ljust(0x1400, b"\0")
        return SimpleNamespace(attestationCertChainSize=10, attestationCertChain=chain)


def make(
    gpus: list[FakeGpu] | None = None, *, overshoot_s: float = 0.0, **kwargs: Any
) -> tuple[NvmlBackend, FakeNvml, FakeTime]:
    """An NvmlBackend over a fake NVML, with the clock polled at every fake 0.1 s tick."""
    t = FakeTime(overshoot_s=overshoot_s)
    nv = FakeNvml(t, gpus or [])
    backend = NvmlBackend(
        nvml=nv,
        clock_thread=False,
        monotonic_ns=t.monotonic_ns,
        time_ns=t.time_ns,
        sleep=t.sleep,
        **kwargs,
    )
    t.on_tick = backend.poll_clocks
    return backend, nv, t
