"""NvmlBackend against a fake pynvml module (tests/agent/backends/nvml/fake_nvml.py): GPUs with
known busy fractions, clocks and energy, on fake time, so every test is deterministic. MIG, GPUs
without GPM and confidential-computing reports: test_fallbacks.py.
"""

from __future__ import annotations

import ctypes.util
import inspect
import threading
from typing import Any

import pynvml
import pytest

from flopwatch.agent.backends.base import GapCause, ProcessShare
from flopwatch.agent.backends.nvml.backend import LIBRARY_NOT_FOUND, NvmlBackend, integrate_clock
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.errors import BackendError, NvmlUnavailableError
from flopwatch.model import Pipe
from tests.agent.backends.nvml import fake_nvml
from tests.agent.backends.nvml.fake_nvml import SEC, WALL0, FakeGpu, FakeNvml, FakeTime

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
    return fake_nvml.make(gpus or [FakeGpu(busy=steady_busy, clock=clock_schedule)], **kwargs)


def test_the_fake_matches_the_real_pynvml() -> None:
    """Every NVML call the fake offers exists in nvidia-ml-py with the same parameters."""
    names = [n for n in vars(FakeNvml) if n.startswith("nvml")]
    assert len(names) > 20
    for name in names:
        real = inspect.signature(getattr(pynvml, name))
        fake = inspect.signature(getattr(FakeNvml, name))
        assert list(fake.parameters)[1:] == list(real.parameters), name
    for const in [n for n in vars(FakeNvml) if n.startswith("NVML_") and "UNKNOWN" not in n]:
        assert getattr(FakeNvml, const) == getattr(pynvml, const), const


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
    assert r1.utilization is None  # GPM GPUs are counted from pipe activity alone


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
    nv.fail_sample = {1: FakeNvml.NVML_ERROR_UNKNOWN}  # call 0 is the baseline
    first, second = backend.next_readings(), backend.next_readings()
    assert first is not None and second is not None
    assert first[0].error == "GPM sample failed: fake NVML error 999"
    assert first[0].cause is GapCause.SAMPLING_ERROR
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


def test_counters_held_by_a_profiler_are_a_profiler_gap() -> None:
    backend, nv, _ = make()
    nv.fail_sample = {1: FakeNvml.NVML_ERROR_IN_USE, 2: FakeNvml.NVML_ERROR_IN_USE}
    first, second, third = (backend.next_readings() for _ in range(3))
    assert first is not None and second is not None and third is not None
    assert first[0].cause is GapCause.PROFILER_BUSY
    assert first[0].error is not None and "in use by another client" in first[0].error
    # The retry (call 2) failed too, so the second interval has no baseline: still a gap.
    assert second[0].error is not None and third[0].error is None


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

    def clock_info(handle: int, type: int) -> int:
        if nv.clock_reads >= 3:
            polled.set()
        return read_clock(handle, type)

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
