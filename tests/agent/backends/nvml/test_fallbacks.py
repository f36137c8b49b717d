"""NvmlBackend beyond a plain Hopper GPU: no GPM (utilization samples), MIG instances, unknown
compute capabilities and confidential-computing reports, over the fake pynvml."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flopwatch.agent.backends.base import BindingStatus, GapCause, GpuReading, ProcessShare
from flopwatch.agent.backends.nvml.backend import MIG_WITHOUT_GPM, NvmlBackend
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.model import Pipe
from tests.agent.backends.nvml.fake_nvml import SEC, WALL0, FakeGpu, FakeMig, FakeNvml, make

HMMA = GPM_PIPE_METRICS[Pipe.HMMA]


def steady_clock(t: float) -> float:
    return 1410.0


def no_gpm(**kw: object) -> FakeGpu:
    """An A100-like GPU: cc 8.0, no GPM; kernels busy 40 % in the first second, 80 % after."""
    args: dict[str, object] = {
        "busy": lambda t: {},
        "clock": steady_clock,
        "gpm": False,
        "cc": (8, 0),
        "sm_count": 108,
        "util": lambda t: 40.0 if t < 1.0 else 80.0,
    }
    return FakeGpu(**(args | kw))  # type: ignore[arg-type]


def rounds(backend: NvmlBackend, n: int) -> list[list[GpuReading]]:
    out = []
    for _ in range(n):
        readings = backend.next_readings()
        assert readings is not None
        out.append(readings)
    return out


# -- no GPM: the kernel-busy bound from utilization samples --------------------------------------


def test_no_gpm_is_not_queried_below_hopper_and_needs_no_flag() -> None:
    backend, nv, _ = make([no_gpm()])
    (gpu,) = backend.gpus()
    assert (gpu.cc, gpu.sm_count) == ((8, 0), 108)
    assert nv.gpm_queries == 0  # compute capability < 9.0 has no GPM to ask about
    assert nv.sample_calls == 0


def test_no_gpm_intervals_end_at_samples_and_bound_busy_time_exactly() -> None:
    # Samples every 0.3 s, one at the start: intervals end at the newest sample, so every
    # sample period lies inside one interval and the bound is the exact busy fraction.
    backend, _, _ = make([no_gpm(util_period_s=0.3)])
    (r1,), (r2,) = rounds(backend, 2)
    assert (r1.start_ns, r1.end_ns) == (WALL0, WALL0 + 9 * SEC // 10)
    assert (r2.start_ns, r2.end_ns) == (WALL0 + 9 * SEC // 10, WALL0 + 18 * SEC // 10)
    assert r1.pipe_busy is None and r1.error is None
    assert r1.utilization == pytest.approx(0.40)
    assert r2.utilization == pytest.approx(0.80)
    assert r1.sm_clock_mhz_s == pytest.approx(0.9 * 1410)
    assert r1.energy_mj is not None


def test_a_sample_period_cut_by_the_start_counts_conservatively() -> None:
    # The first period (-0.2 s, 0.1 s] reads 40 %: up to 0.12 s of busy time that may all lie
    # in (0, 0.1], so the bound takes that 0.1 s as busy. Then three whole periods at 40 %.
    backend, _, _ = make([no_gpm(util_period_s=0.3, util_phase_s=0.1)])
    ((r,),) = rounds(backend, 1)
    assert (r.start_ns, r.end_ns) == (WALL0, WALL0 + SEC)
    assert r.utilization == pytest.approx((0.1 + 3 * 0.3 * 0.4) / 1.0)


def test_no_utilization_samples_for_too_long_is_a_gap() -> None:
    backend, _, _ = make([no_gpm(util_until_s=1.0)])
    got = rounds(backend, 5)
    assert [len(rs) for rs in got] == [1, 0, 0, 0, 1]  # nothing new for 3 intervals, then a gap
    assert got[0][0].error is None
    gap = got[4][0]
    assert gap.error is not None and "no NVML utilization sample" in gap.error
    assert (gap.start_ns, gap.end_ns) == (WALL0 + SEC, WALL0 + 5 * SEC)


def test_no_gpm_and_no_utilization_samples_is_a_gap_every_interval() -> None:
    backend, _, _ = make([no_gpm(util_samples=False)])
    for k, (r,) in enumerate(rounds(backend, 2)):
        assert r.error is not None and "cannot be bounded" in r.error
        assert (r.start_ns, r.end_ns) == (WALL0 + k * SEC, WALL0 + (k + 1) * SEC)


def test_unknown_compute_capability_with_gpm_is_measured() -> None:
    gpu = FakeGpu(busy=lambda t: {HMMA: 50.0}, clock=steady_clock, cc=(12, 0))
    backend, nv, _ = make([gpu])
    ((r,),) = rounds(backend, 1)
    assert nv.gpm_queries == 1
    assert r.gpu.cc == (12, 0) and r.error is None
    assert r.pipe_busy is not None and r.pipe_busy[Pipe.HMMA] == pytest.approx(0.5)


# -- MIG ---------------------------------------------------------------------------------------


def mig_gpu(gpm: bool = True) -> FakeGpu:
    return FakeGpu(
        busy=lambda t: {HMMA: 99.0},  # the whole GPU: must not be read in MIG mode
        clock=steady_clock,
        gpm=gpm,
        migs=[
            FakeMig(gpu_instance=3, sm_count=60, busy=lambda t: {HMMA: 70.0}, procs=[7]),
            FakeMig(gpu_instance=9, sm_count=16, busy=lambda t: {HMMA: 20.0}, procs=[8, 9]),
        ],
    )


def test_each_mig_instance_is_a_device_of_its_own() -> None:
    backend, _, _ = make([mig_gpu(), FakeGpu(busy=lambda t: {HMMA: 10.0}, clock=steady_clock)])
    a, b, whole = backend.gpus()
    assert (a.uuid, a.mig_instance, a.sm_count) == ("GPU-fake-0", "MIG-fake-0-0", 60)
    assert (b.uuid, b.mig_instance, b.sm_count) == ("GPU-fake-0", "MIG-fake-0-1", 16)
    assert a.name.endswith("MIG 60sm") and a.index == b.index == 0
    assert (whole.uuid, whole.mig_instance, whole.sm_count) == ("GPU-fake-1", "", 132)


def test_mig_instances_have_their_own_gpm_processes_and_share_the_clock() -> None:
    backend, _, _ = make([mig_gpu()])
    for ra, rb in rounds(backend, 2):
        assert ra.error is None and rb.error is None
        assert ra.pipe_busy is not None and rb.pipe_busy is not None
        assert ra.pipe_busy[Pipe.HMMA] == pytest.approx(0.70)
        assert rb.pipe_busy[Pipe.HMMA] == pytest.approx(0.20)
        # One SM clock per GPU, integrated for each instance (not consumed by the first).
        assert ra.sm_clock_mhz_s == rb.sm_clock_mhz_s == pytest.approx(1410.0)
        assert ra.energy_mj is None and rb.energy_mj is None  # no per-instance energy counter
        assert ra.processes == (ProcessShare(7, 1.0),)
        assert rb.processes == (ProcessShare(8, 0.5), ProcessShare(9, 0.5))
        assert ra.counters().sm_count == 60


def test_mig_instances_of_a_gpu_without_gpm_are_signed_gaps() -> None:
    backend, nv, _ = make([mig_gpu(gpm=False)])
    ((ra, rb),) = rounds(backend, 1)
    assert ra.error == rb.error == MIG_WITHOUT_GPM
    assert ra.cause is GapCause.SAMPLING_ERROR
    assert nv.sample_calls == 0


# -- confidential-computing reports -------------------------------------------------------------

NONCE = bytes(range(32))


def test_cc_off_says_so_for_every_gpu() -> None:
    backend, _, _ = make([mig_gpu(), no_gpm()])
    answers = backend.hardware_bindings(NONCE)
    assert [(b.gpu.uuid, b.gpu.mig_instance) for b in answers] == [
        ("GPU-fake-0", ""),
        ("GPU-fake-1", ""),
    ]
    assert {b.status for b in answers} == {BindingStatus.CC_OFF}
    assert all(b.report == b"" and "off" in b.detail for b in answers)


def test_cc_state_unsupported_or_failing() -> None:
    backend, nv, _ = make([no_gpm()])
    nv.cc_state = FakeNvml.NVML_ERROR_FUNCTION_NOT_FOUND  # an old driver
    assert [b.status for b in backend.hardware_bindings(NONCE)] == [BindingStatus.NOT_SUPPORTED]
    nv.cc_state = FakeNvml.NVML_ERROR_UNKNOWN
    (b,) = backend.hardware_bindings(NONCE)
    assert b.status is BindingStatus.ERROR and "fake NVML error 999" in b.detail


def test_cc_on_gives_each_gpu_report_over_the_nonce() -> None:
    backend, nv, _ = make([no_gpm(), no_gpm(cc_report=False)])
    nv.cc_state = SimpleNamespace(environment=2, ccFeature=1, devToolsMode=1)
    good, unsupported = backend.hardware_bindings(NONCE)
    assert nv.nonces == [NONCE]
    assert good.status is BindingStatus.REPORT
    assert good.report == b"SPDM-report-" + NONCE  # trimmed to the size NVML gave
    assert good.cert_chain == b"cert-chain" and good.cec_report == b""
    assert "devtools mode on" in good.detail
    assert unsupported.status is BindingStatus.NOT_SUPPORTED and unsupported.report == b""
