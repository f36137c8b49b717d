"""GPM sampling beyond the happy path: GPUs that say they have GPM but never give a sample (vGPU
guests), which metrics must succeed, who holds the counters, and how far apart samples lie."""

from __future__ import annotations

import itertools

import pytest

from flopwatch.agent.backends.base import GapCause
from flopwatch.agent.backends.nvml.backend import MIG_GPM_NEVER_WORKS, NvmlBackend
from flopwatch.agent.backends.nvml.gpm import (
    GPM_UNSUPPORTED_STRIKES,
    MIN_INTERVAL_S,
    GpmSampler,
    gpm_metrics_for,
)
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.agent.backends.nvml.lib import Nvml
from flopwatch.model import Pipe
from tests.agent.backends.nvml.fake_nvml import (
    SEC,
    WALL0,
    FakeGpu,
    FakeMig,
    FakeNvml,
    FakeTime,
    make,
)

HMMA, FP32 = GPM_PIPE_METRICS[Pipe.HMMA], GPM_PIPE_METRICS[Pipe.FP32]
DFMA = GPM_PIPE_METRICS[Pipe.DFMA_TENSOR]


def gpu(**kw: object) -> FakeGpu:
    args: dict[str, object] = {
        "busy": lambda t: {HMMA: 50.0, FP32: 10.0},
        "clock": lambda t: 1410.0,
        "util": lambda t: 40.0,
        "util_period_s": 0.25,
    }
    return FakeGpu(**(args | kw))  # type: ignore[arg-type]


# -- GPM supported on paper, never sampled (vGPU guests) -----------------------------------------


def test_gpm_that_never_samples_falls_back_to_utilization(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, nv, _ = make([gpu(gpm_sample_error=FakeNvml.NVML_ERROR_NOT_SUPPORTED)])
    first = backend.next_readings()
    assert GPM_UNSUPPORTED_STRIKES == 3  # the start sample, the end sample and its retry
    assert first is not None
    (gap,) = first
    assert gap.error is not None and gap.cause is GapCause.SAMPLING_ERROR
    assert (gap.start_ns, gap.end_ns) == (WALL0, WALL0 + SEC)
    assert "utilization samples from now on" in caplog.text
    assert len(nv.freed) == 2
    calls = nv.sample_calls
    for k in range(2, 4):
        readings = backend.next_readings()
        assert readings is not None
        (r,) = readings
        assert r.error is None and r.pipe_busy is None  # method nvml-utilization
        assert r.utilization == pytest.approx(0.40)
        assert r.end_ns == WALL0 + k * SEC  # samples every 0.25 s: ends on the boundary
    assert readings[0].start_ns == WALL0 + 2 * SEC
    assert nv.sample_calls == calls  # GPM is not asked again


def test_gpm_that_worked_once_is_kept_through_failures() -> None:
    backend, nv, _ = make([gpu()])
    nv.fail_sample = {k: FakeNvml.NVML_ERROR_NOT_SUPPORTED for k in range(1, 7)}
    got = [backend.next_readings() for _ in range(5)]
    assert all(rs is not None for rs in got)
    errors = [rs[0].error for rs in got if rs is not None]
    assert errors[:3] != [None] * 3 and errors[4] is None
    last = got[4]
    assert last is not None and last[0].pipe_busy is not None  # still GPM


def test_a_profiler_from_the_start_is_waited_out_not_given_up_on() -> None:
    backend, _, _ = make([gpu(gpm_sample_error=FakeNvml.NVML_ERROR_IN_USE)])
    for _ in range(4):
        readings = backend.next_readings()
        assert readings is not None and readings[0].cause is GapCause.PROFILER_BUSY
        assert readings[0].utilization is None


def test_a_mig_instance_whose_gpm_never_samples_is_a_gap_without_more_nvml_calls() -> None:
    g = gpu(
        gpm_sample_error=FakeNvml.NVML_ERROR_NO_PERMISSION,
        migs=[FakeMig(gpu_instance=1, sm_count=16, busy=lambda t: {HMMA: 50.0})],
    )
    backend, nv, _ = make([g])
    backend.next_readings()
    calls = nv.sample_calls
    for _ in range(2):
        readings = backend.next_readings()
        assert readings is not None and readings[0].error == MIG_GPM_NEVER_WORKS
    assert nv.sample_calls == calls


# -- which metrics must succeed ------------------------------------------------------------------


def test_only_the_pipes_the_model_counts_are_read() -> None:
    assert set(gpm_metrics_for((9, 0))) == set(Pipe)  # Hopper: every pipe has a rate
    assert set(gpm_metrics_for((12, 0))) == set(Pipe)  # unknown: the fastest known rates
    ada = gpm_metrics_for((8, 9))  # the rate table has no fp64 tensor pipe on Ada
    assert Pipe.DFMA_TENSOR not in ada and set(ada) == set(Pipe) - {Pipe.DFMA_TENSOR}


def test_a_metric_the_model_does_not_count_is_not_read_and_cannot_void() -> None:
    t = FakeTime()
    nv = FakeNvml(t, [gpu(failing_metrics={DFMA: FakeNvml.NVML_ERROR_UNKNOWN})])
    sampler = GpmSampler(Nvml(nv), 0, gpm_metrics_for((8, 9)))
    sampler.alloc()
    sampler.start()
    t.sleep(1.0)
    busy, failure = sampler.busy()
    assert failure is None and busy is not None
    assert busy[Pipe.HMMA] == pytest.approx(0.5) and Pipe.DFMA_TENSOR not in busy
    assert DFMA not in nv.requested[-1] and HMMA in nv.requested[-1]


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (FakeNvml.NVML_ERROR_NOT_SUPPORTED, GapCause.SAMPLING_ERROR),
        (FakeNvml.NVML_ERROR_INSUFFICIENT_RESOURCES, GapCause.SAMPLING_ERROR),
        (FakeNvml.NVML_ERROR_IN_USE, GapCause.PROFILER_BUSY),
    ],
)
def test_a_counted_metric_that_fails_voids_the_interval(code: int, cause: GapCause) -> None:
    backend, _, _ = make([gpu(failing_metrics={FP32: code})])
    readings = backend.next_readings()
    assert readings is not None
    (r,) = readings
    assert r.pipe_busy is None and r.cause is cause
    assert r.error is not None and f"GPM metric {FP32} (fp32) failed: code {code}" in r.error


# -- how far apart GPM samples lie ---------------------------------------------------------------


def test_an_interval_of_100_ms_or_less_is_refused() -> None:
    with pytest.raises(ValueError, match=r"more than 0\.1 s"):
        NvmlBackend(interval_s=MIN_INTERVAL_S, nvml=FakeNvml(FakeTime(), []))
    NvmlBackend(interval_s=0.15, nvml=FakeNvml(FakeTime(), []))


def test_a_late_caller_never_gets_a_boundary_within_100_ms() -> None:
    backend, _, t = make([gpu()])
    backend.next_readings()
    t.mono += 1_950_000_000  # the caller was busy: the boundary falls at 2.95 s
    late, after = backend.next_readings(), backend.next_readings()
    assert late is not None and after is not None
    assert late[0].end_ns - WALL0 == 2_950_000_000
    assert (after[0].start_ns - WALL0, after[0].end_ns - WALL0) == (2_950_000_000, 4 * SEC)
    assert after[0].error is None


def test_gpm_sample_times_lie_more_than_100_ms_apart() -> None:
    backend, nv, t = make([gpu()], interval_s=0.15)
    backend.next_readings()
    t.mono += 140_000_000  # late: the next boundary would come 10 ms after this one
    for _ in range(3):
        backend.next_readings()
    times = nv.sample_times
    assert len(times) == 5
    assert min(b - a for a, b in itertools.pairwise(times)) > MIN_INTERVAL_S * 1e9
