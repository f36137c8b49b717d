"""MIG with several compute instances in one GPU instance: each compute instance is sampled on
its own (nvmlGpmSampleGet of its MIG device), and where the driver cannot, the GPU instance's
figure is read once and shared so that the compute instances' figures never add up to more
than the GPU instance's."""

from __future__ import annotations

import pytest

from flopwatch.agent.backends.base import GpuReading
from flopwatch.agent.backends.nvml.backend import NvmlBackend
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.model import Counters, Pipe
from flopwatch.model.flops import estimate, upper_bound
from tests.agent.backends.nvml.fake_nvml import FakeGpu, FakeMig, FakeNvml, make

HMMA = GPM_PIPE_METRICS[Pipe.HMMA]
CLOCK_MHZ = 1410.0
GI_SMS = 60  # GPU instance 1: compute instances of 30 and 20 SMs, 10 SMs in none


def mig_gpu(**kw: object) -> FakeGpu:
    args: dict[str, object] = {
        "busy": lambda t: {HMMA: 99.0},  # the whole GPU: never read in MIG mode
        "clock": lambda t: CLOCK_MHZ,
        "gi_sms": {1: GI_SMS},
        "migs": [
            FakeMig(gpu_instance=1, sm_count=30, busy=lambda t: {HMMA: 80.0}, procs=[7]),
            FakeMig(gpu_instance=1, sm_count=20, busy=lambda t: {HMMA: 10.0}, procs=[8]),
            FakeMig(gpu_instance=2, sm_count=16, busy=lambda t: {HMMA: 50.0}, procs=[9]),
        ],
    }
    return FakeGpu(**(args | kw))  # type: ignore[arg-type]


def rounds(backend: NvmlBackend, n: int) -> list[list[GpuReading]]:
    out = []
    for _ in range(n):
        readings = backend.next_readings()
        assert readings is not None and all(r.error is None for r in readings)
        out.append(readings)
    return out


def gpu_instance_figures(nv: FakeNvml, r: GpuReading, gi: int) -> tuple[int, int]:
    """(estimate, upper bound) of GPU instance `gi` over the interval of reading `r`, from the
    fake's ground truth: its SM-weighted activity over all its SMs."""
    sms = nv.gpu_instance_sms(0, gi)
    busy = nv.gpm_percents(("gi", 0, gi), 0.0)[HMMA] / 100
    c = r.counters()
    elapsed = round(sms * r.sm_clock_mhz_s * 1e6)
    gi_counters = Counters(
        cc=c.cc,
        sm_count=sms,
        max_sm_clock_mhz=c.max_sm_clock_mhz,
        duration_ns=c.duration_ns,
        elapsed_sm_cycles=elapsed,
        active={Pipe.HMMA: round(busy * elapsed)},
    )
    return estimate(gi_counters), upper_bound(gi_counters)


def test_each_compute_instance_is_sampled_on_its_own() -> None:
    backend, nv, _ = make([mig_gpu()])
    for a, b, c in rounds(backend, 2):
        assert [r.gpu.sm_count for r in (a, b, c)] == [30, 20, 16]
        assert a.pipe_busy is not None and b.pipe_busy is not None and c.pipe_busy is not None
        assert a.pipe_busy[Pipe.HMMA] == pytest.approx(0.80)
        assert b.pipe_busy[Pipe.HMMA] == pytest.approx(0.10)
        assert c.pipe_busy[Pipe.HMMA] == pytest.approx(0.50)
    assert set(nv.sampled) == {(0, 0), (0, 1), (0, 2)}  # MIG device handles only


def test_compute_instance_figures_sum_to_their_gpu_instance_figure() -> None:
    backend, nv, _ = make([mig_gpu()])
    for a, b, _ in rounds(backend, 2):
        gi_estimate, gi_upper = gpu_instance_figures(nv, a, 1)
        assert estimate(a.counters()) + estimate(b.counters()) == pytest.approx(gi_estimate, 1e-6)
        assert upper_bound(a.counters()) + upper_bound(b.counters()) <= gi_upper + 2  # rounding


def test_without_per_device_gpm_the_gpu_instance_figure_is_shared_never_more() -> None:
    backend, nv, _ = make([mig_gpu(mig_device_gpm=False)])
    got = rounds(backend, 3)
    for a, b, c in got:
        # Each compute instance of GPU instance 1 shows its activity: 26 busy SMs of 60.
        assert a.pipe_busy is not None and b.pipe_busy is not None and c.pipe_busy is not None
        assert a.pipe_busy[Pipe.HMMA] == b.pipe_busy[Pipe.HMMA] == pytest.approx(26 / 60)
        assert c.pipe_busy[Pipe.HMMA] == pytest.approx(0.50)  # alone in its GPU instance
        gi_estimate, gi_upper = gpu_instance_figures(nv, a, 1)
        total = estimate(a.counters()) + estimate(b.counters())
        assert total <= gi_estimate
        assert total == pytest.approx(gi_estimate * 50 / 60, 1e-6)  # 10 SMs lie in no CI
        assert upper_bound(a.counters()) + upper_bound(b.counters()) <= gi_upper
    # Read once per boundary for each GPU instance (the start and 3 ends), not once per device.
    assert nv.sampled.count(("gi", 0, 1)) == 4 and nv.sampled.count(("gi", 0, 2)) == 4
    assert not [w for w in nv.sampled if w[0] != "gi"]


def test_shared_figure_is_exact_where_the_compute_instances_cover_the_gpu_instance() -> None:
    backend, nv, _ = make([mig_gpu(mig_device_gpm=False, gi_sms={1: 50})])
    for a, b, _ in rounds(backend, 2):
        gi_estimate, _ = gpu_instance_figures(nv, a, 1)
        total = estimate(a.counters()) + estimate(b.counters())
        assert total == pytest.approx(gi_estimate, 1e-6)


def test_close_frees_a_shared_sampler_once() -> None:
    backend, nv, _ = make([mig_gpu(mig_device_gpm=False)])
    rounds(backend, 1)
    backend.close()
    # 3 probes' buffers freed when GPU instances were chosen, then 2 per GPU instance.
    assert len(nv.freed) == 3 * 2 + 2 * 2
    assert len({id(s) for s in nv.freed}) == len(nv.freed)
