"""NvmlBackend against a fake pynvml module: GPUs with known busy fractions, clocks and energy.

Time is fake: `FakeTime.sleep` advances a monotonic clock in 0.1 s steps and polls the SM clocks
at each step, standing in for the backend's poller thread, so every test is deterministic.
"""

from __future__ import annotations

import ctypes.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from agent.backends.base import ProcessShare
from agent.backends.nvml import LIBRARY_NOT_FOUND, NvmlBackend, integrate_clock
from agent.backends.nvml_ids import GPM_PIPE_METRICS
from flopwatch.errors import BackendError, NvmlUnavailableError
from flopwatch.model import Pipe

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


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"fake NVML error {self.value}"


@dataclass
class FakeGpu:
    """One simulated GPU. `busy(t)` gives GPM percents per metric id at monotonic second t."""

    busy: Callable[[float], dict[int, float]]
    clock: Callable[[float], float]
    power_w: float = 500.0
    gpm: bool = True
    procs: list[int] = field(default_factory=list)
    proc_sm: dict[int, float] = field(default_factory=dict)  # pid -> SM % per sample
    fail_clock: bool = False


def fake_metrics_get() -> SimpleNamespace:
    """Stands in for pynvml's ctypes struct c_nvmlGpmMetricsGet_t."""
    metrics = [SimpleNamespace(metricId=0, value=0.0, nvmlReturn=0) for _ in range(32)]
    return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None, metrics=metrics)


class FakeNvml:
    """The parts of pynvml NvmlBackend uses, over FakeGpus and FakeTime."""

    NVMLError = FakeNVMLError
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_UNKNOWN = 999
    NVML_CLOCK_SM = 1
    NVML_GPM_METRICS_GET_VERSION = 1
    c_nvmlGpmMetricsGet_t = staticmethod(fake_metrics_get)

    def __init__(self, t: FakeTime, gpus: list[FakeGpu]) -> None:
        self.t = t
        self.gpus = gpus
        self.init_error: int | None = None
        self.fail_sample: set[int] = set()  # GPM sample calls (counted from 0) that fail
        self.fail_metrics: set[int] = set()  # GPM metrics calls (counted from 0) that fail
        self.sample_calls = 0
        self.metrics_calls = 0
        self.freed: list[Any] = []
        self.shutdowns = 0
        self.clock_reads = 0

    def now(self) -> float:
        return (self.t.mono - MONO0) / 1e9

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-fake-{h}"

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetSerial(self, h: int) -> str:
        raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetNumGpuCores(self, h: int) -> int:
        return 132 * 128

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        assert kind == self.NVML_CLOCK_SM
        return 1980

    def nvmlGpmQueryDeviceSupport(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(isSupportedDevice=int(self.gpus[h].gpm))

    def nvmlGpmSampleAlloc(self) -> SimpleNamespace:
        return SimpleNamespace(gpu=None, t=None)

    def nvmlGpmSampleFree(self, s: Any) -> None:
        self.freed.append(s)

    def nvmlGpmSampleGet(self, h: int, s: SimpleNamespace) -> SimpleNamespace:
        n, self.sample_calls = self.sample_calls, self.sample_calls + 1
        if n in self.fail_sample:
            raise FakeNVMLError(self.NVML_ERROR_UNKNOWN)
        s.gpu, s.t = h, self.now()
        return s

    def nvmlGpmMetricsGet(self, mg: SimpleNamespace) -> SimpleNamespace:
        n, self.metrics_calls = self.metrics_calls, self.metrics_calls + 1
        if n in self.fail_metrics:
            raise FakeNVMLError(self.NVML_ERROR_UNKNOWN)
        assert mg.version == self.NVML_GPM_METRICS_GET_VERSION
        assert mg.sample1.gpu == mg.sample2.gpu and mg.sample1.t < mg.sample2.t
        percents = self.gpus[mg.sample1.gpu].busy(mg.sample1.t)
        for m in mg.metrics[: mg.numMetrics]:
            m.value = percents.get(m.metricId, 0.0)
            m.nvmlReturn = 0
        return mg

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        assert kind == self.NVML_CLOCK_SM
        self.clock_reads += 1
        if self.gpus[h].fail_clock:
            raise FakeNVMLError(self.NVML_ERROR_UNKNOWN)
        return round(self.gpus[h].clock(self.now()))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return 1_000_000 + round(self.gpus[h].power_w * 1000 * self.now())

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=42, memory=10)  # percent

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in self.gpus[h].procs]

    def nvmlDeviceGetProcessUtilization(self, h: int, ts: int) -> list[SimpleNamespace]:
        now_us = self.t.time_ns() // 1000
        rows = [
            SimpleNamespace(pid=pid, timeStamp=now_us - 1000, smUtil=sm, memUtil=0)
            for pid, sm in self.gpus[h].proc_sm.items()
        ]
        rows = [r for r in rows if r.timeStamp > ts]
        if not rows:
            raise FakeNVMLError(self.NVML_ERROR_NOT_FOUND)
        return rows


HMMA, FP32 = GPM_PIPE_METRICS[Pipe.HMMA], GPM_PIPE_METRICS[Pipe.FP32]


def steady_busy(t: float) -> dict[int, float]:
    """60 % HMMA, 5 % FP32 in the first second, 30 % HMMA after it."""
    return {HMMA: 60.0, FP32: 5.0} if t < 1.0 else {HMMA: 30.0}


def clock_schedule(t: float) -> float:
    """1980 MHz until 0.45 s, then 1410; from 1 s a ramp from 1410 to 1980 over one second."""
    if t < 1.0:
        return 1980.0 if t < 0.45 else 1410.0
    return 1410.0 + 570.0 * min(t - 1.0, 1.0)


def make(
    gpus: list[FakeGpu] | None = None, **kwargs: Any
) -> tuple[NvmlBackend, FakeNvml, FakeTime]:
    t = FakeTime(overshoot_s=kwargs.pop("overshoot_s", 0.0))
    nv = FakeNvml(t, gpus or [FakeGpu(busy=steady_busy, clock=clock_schedule)])
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


def test_identity() -> None:
    backend, _, _ = make()
    (gpu,) = backend.gpus()
    assert gpu.uuid == "GPU-fake-0"
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert (gpu.sm_count, gpu.cc, gpu.max_sm_clock_mhz, gpu.index) == (132, (9, 0), 1980, 0)
    assert gpu.serial == ""  # NOT_SUPPORTED is a value, not an error


def test_pipe_busy_clock_energy() -> None:
    backend, _, _ = make()
    first = backend.next_readings()
    second = backend.next_readings()
    assert first is not None and second is not None
    (r1,), (r2,) = first, second
    assert r1.error is None and r2.error is None
    assert r1.pipe_busy is not None and r2.pipe_busy is not None
    assert r1.pipe_busy[Pipe.HMMA] == pytest.approx(0.60)
    assert r1.pipe_busy[Pipe.FP32] == pytest.approx(0.05)
    assert r1.pipe_busy[Pipe.DFMA_TENSOR] == 0.0
    assert set(r1.pipe_busy) == set(Pipe)
    assert r2.pipe_busy[Pipe.HMMA] == pytest.approx(0.30)
    # Exact integrals: 0.45 s x 1980 + 0.55 s x 1410, then a ramp averaging 1695 MHz.
    assert r1.sm_clock_mhz_s == pytest.approx(0.45 * 1980 + 0.55 * 1410, rel=0.01)
    assert r2.sm_clock_mhz_s == pytest.approx(1695.0, rel=0.01)
    assert r1.clock_samples >= 10
    assert r1.energy_mj == 500_000 and r2.energy_mj == 500_000
    assert (r1.start_ns, r1.end_ns) == (WALL0, WALL0 + SEC)
    assert (r2.start_ns, r2.end_ns) == (WALL0 + SEC, WALL0 + 2 * SEC)
    assert r1.utilization == pytest.approx(0.42)


def test_schedule_does_not_drift() -> None:
    backend, _, _ = make(overshoot_s=0.003)
    ends = []
    for _ in range(5):
        readings = backend.next_readings()
        assert readings is not None
        ends.append(readings[0].end_ns - WALL0)
    assert ends == [k * SEC + 3_000_000 for k in range(1, 6)]


def test_late_caller_gets_one_long_interval_then_the_schedule() -> None:
    backend, _, t = make()
    backend.next_readings()
    t.mono += 2_500_000_000  # the caller was busy for 2.5 s
    late = backend.next_readings()
    on_time = backend.next_readings()
    assert late is not None and on_time is not None
    assert (late[0].start_ns - WALL0, late[0].end_ns - WALL0) == (SEC, 3_500_000_000)
    assert on_time[0].end_ns - WALL0 == 4 * SEC


def test_processes_and_shares() -> None:
    gpu = FakeGpu(busy=steady_busy, clock=clock_schedule, procs=[100, 200])
    gpu.proc_sm = {100: 30.0, 200: 10.0}
    backend, _, _ = make([gpu])
    readings = backend.next_readings()
    assert readings is not None
    assert readings[0].processes == (ProcessShare(100, 0.75), ProcessShare(200, 0.25))
    # No utilization samples (NOT_FOUND): the running processes split the interval equally.
    gpu.proc_sm = {}
    gpu.procs = [200]
    readings = backend.next_readings()
    assert readings is not None
    assert readings[0].processes == (ProcessShare(100, 0.5), ProcessShare(200, 0.5))


def test_gpm_metrics_error_is_a_gap_and_the_next_interval_recovers() -> None:
    backend, nv, _ = make()
    nv.fail_metrics = {0}
    first, second = backend.next_readings(), backend.next_readings()
    assert first is not None and second is not None
    assert first[0].error is not None and "GPM metrics failed" in first[0].error
    assert first[0].pipe_busy is None
    assert second[0].error is None
    assert second[0].pipe_busy is not None
    assert second[0].pipe_busy[Pipe.HMMA] == pytest.approx(0.30)


def test_gpm_sample_error_is_a_gap_and_the_next_interval_recovers() -> None:
    backend, nv, _ = make()
    nv.fail_sample = {1}  # call 0 is the baseline, call 1 ends the first interval
    first, second = backend.next_readings(), backend.next_readings()
    assert first is not None and second is not None
    assert first[0].error == "GPM sample failed: fake NVML error 999"
    assert second[0].error is None
    assert second[0].pipe_busy is not None


def test_one_gpu_clock_error_does_not_stop_the_others() -> None:
    good = FakeGpu(busy=steady_busy, clock=clock_schedule)
    bad = FakeGpu(busy=steady_busy, clock=clock_schedule, fail_clock=True)
    backend, _, _ = make([good, bad])
    readings = backend.next_readings()
    assert readings is not None
    assert readings[0].error is None
    assert readings[1].error is not None and "SM clock read failed" in readings[1].error
    bad.fail_clock = False
    readings = backend.next_readings()
    assert readings is not None
    assert [r.error for r in readings] == [None, None]


def test_missing_library() -> None:
    backend, nv, _ = make()
    nv.init_error = FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND
    with pytest.raises(NvmlUnavailableError, match="NVML library not found"):
        backend.gpus()


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="NVML present")
def test_missing_library_with_real_pynvml() -> None:
    with pytest.raises(NvmlUnavailableError) as e:
        NvmlBackend().gpus()
    assert str(e.value) == LIBRARY_NOT_FOUND


def test_gpm_unsupported_is_fatal_unless_allowed() -> None:
    gpu = FakeGpu(busy=steady_busy, clock=clock_schedule, gpm=False)
    backend, nv, _ = make([gpu])
    with pytest.raises(NvmlUnavailableError, match="GPM"):
        backend.gpus()
    assert nv.shutdowns == 1

    backend, _, _ = make([gpu], allow_no_gpm=True)
    readings = backend.next_readings()
    assert readings is not None
    (r,) = readings
    assert r.error is None and r.pipe_busy is None
    assert r.utilization == pytest.approx(0.42)
    assert r.sm_clock_mhz_s == pytest.approx(0.45 * 1980 + 0.55 * 1410, rel=0.01)


def test_close_frees_samples_and_shuts_down() -> None:
    backend, nv, _ = make()
    backend.next_readings()
    backend.close()
    backend.close()
    assert len(nv.freed) == 2 and nv.shutdowns == 1
    assert backend.next_readings() is None
    with pytest.raises(BackendError, match="closed"):
        backend.gpus()


def test_clock_thread_polls_until_closed() -> None:
    t = FakeTime()
    nv = FakeNvml(t, [FakeGpu(busy=steady_busy, clock=clock_schedule)])
    polled = threading.Event()
    read_clock = nv.nvmlDeviceGetClockInfo

    def clock_info(h: int, kind: int) -> int:
        if nv.clock_reads >= 3:
            polled.set()
        return read_clock(h, kind)

    nv.nvmlDeviceGetClockInfo = clock_info  # type: ignore[method-assign]
    backend = NvmlBackend(nvml=nv, clock_poll_s=0.001, monotonic_ns=t.monotonic_ns)
    backend.gpus()
    assert polled.wait(timeout=10)
    backend.close()
    reads = nv.clock_reads
    assert not any(th.name == "nvml-clock" for th in threading.enumerate())
    assert nv.clock_reads == reads


def test_integrate_clock_edges() -> None:
    assert integrate_clock([], 0, SEC) == 0.0
    # Held before the first and after the last sample, linear in between, clipped to the window.
    pts = [(SEC // 4, 1000.0), (3 * SEC // 4, 2000.0)]
    assert integrate_clock(pts, 0, SEC) == pytest.approx(0.25 * 1000 + 0.5 * 1500 + 0.25 * 2000)
    assert integrate_clock(pts, SEC // 2, SEC) == pytest.approx(0.25 * 1750 + 0.25 * 2000)
