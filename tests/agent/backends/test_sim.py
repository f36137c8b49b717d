"""SimBackend: deterministic, H100-like, contiguous intervals, fault injection and pacing."""

from __future__ import annotations

import re

import pytest

from flopwatch.agent.backends.base import BindingStatus, GapCause, GpuReading, ProcessShare
from flopwatch.agent.backends.sim import PROFILES, SimBackend, SimGpuModel, SimProfile
from flopwatch.model import Pipe, physical_peak, rates_for, upper_bound

START = 1_700_000_000 * 10**9
SEC = 10**9


def take(backend: SimBackend, n: int) -> list[list[GpuReading]]:
    out = []
    for _ in range(n):
        readings = backend.next_readings()
        assert readings is not None
        out.append(readings)
    return out


def test_gpu_ids_derive_from_the_node_id_in_nvidia_format() -> None:
    a = SimBackend(2, start_ns=START, node_id="gpu-017").gpus()
    again = SimBackend(2, seed=9, start_ns=START, node_id="gpu-017").gpus()
    b = SimBackend(2, start_ns=START, node_id="gpu-018").gpus()
    uuid = re.compile(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert all(uuid.fullmatch(g.uuid) for g in (*a, *b))
    assert [g.uuid for g in a] == [g.uuid for g in again]  # stable: restarts measure the same GPUs
    assert len({g.uuid for g in (*a, *b)}) == 4  # unique per node and per device
    assert len({g.serial for g in (*a, *b)}) == 4 and all(len(g.serial) == 13 for g in a)
    mig = SimBackend(1, start_ns=START, profile=PROFILES["h100-mig"], node_id="gpu-017").gpus()
    assert {g.uuid for g in mig} == {a[0].uuid}
    assert len({g.mig_instance for g in mig}) == 3
    assert all(g.mig_instance.startswith("MIG-") and len(g.mig_instance) == 40 for g in mig)


def test_gpus_are_h100_like() -> None:
    gpus = SimBackend(3, seed=7, start_ns=START).gpus()
    assert [g.uuid for g in gpus] == ["GPU-sim-7-0", "GPU-sim-7-1", "GPU-sim-7-2"]
    assert [g.index for g in gpus] == [0, 1, 2]
    assert all((g.sm_count, g.cc, g.max_sm_clock_mhz) == (132, (9, 0), 1980) for g in gpus)


def test_same_seed_same_readings_other_seed_other_readings() -> None:
    a = take(SimBackend(4, seed=1, start_ns=START), 5)
    b = take(SimBackend(4, seed=1, start_ns=START), 5)
    c = take(SimBackend(4, seed=2, start_ns=START), 5)
    assert a == b
    assert [r.pipe_busy for rs in a for r in rs] != [r.pipe_busy for rs in c for r in rs]


def test_a_gpu_workload_does_not_depend_on_the_gpu_count() -> None:
    two = take(SimBackend(2, seed=3, start_ns=START), 3)
    eight = take(SimBackend(8, seed=3, start_ns=START), 3)
    assert [rs[1].pipe_busy for rs in two] == [rs[1].pipe_busy for rs in eight]


def test_readings_are_contiguous_and_plausible() -> None:
    backend = SimBackend(2, interval_s=0.5, seed=0, start_ns=START)
    rounds = take(backend, 10)
    for k, readings in enumerate(rounds):
        for r in readings:
            assert (r.start_ns, r.end_ns) == (START + k * SEC // 2, START + (k + 1) * SEC // 2)
            assert r.error is None and r.pipe_busy is not None
            assert 0.2 <= r.pipe_busy[Pipe.HMMA] <= 0.8
            assert 0.0 <= r.pipe_busy[Pipe.FP32] <= 0.1
            assert r.pipe_busy[Pipe.FP64] == 0.0
            assert 1100 * 0.5 <= r.sm_clock_mhz_s <= 1980 * 0.5
            assert r.energy_mj is not None and r.energy_mj > 0
            assert r.processes == (ProcessShare(10000 + r.gpu.index, 1.0),)
            c = r.counters()
            assert upper_bound(c) <= physical_peak(c)


def test_default_start_is_now_rounded_down_to_the_second() -> None:
    backend = SimBackend(1, time_ns=lambda: START + 123_456_789)
    (r,) = take(backend, 1)[0]
    assert r.start_ns == START


def test_fail_next_makes_one_gap_and_keeps_the_workload() -> None:
    clean = take(SimBackend(2, seed=5, start_ns=START), 3)
    backend = SimBackend(2, seed=5, start_ns=START)
    backend.fail_next(1, "NVML: GPU is lost")
    faulty = take(backend, 3)
    assert faulty[0][0] == clean[0][0]
    assert faulty[0][1].error == "NVML: GPU is lost"
    assert faulty[0][1].pipe_busy is None and faulty[0][1].sm_clock_mhz_s == 0.0
    assert faulty[1] == clean[1] and faulty[2] == clean[2]


def test_fail_next_count_and_bad_index() -> None:
    backend = SimBackend(1, start_ns=START)
    backend.fail_next(0, "profiler holds the counters", count=2)
    assert [rs[0].error for rs in take(backend, 3)] == [
        "profiler holds the counters",
        "profiler holds the counters",
        None,
    ]
    with pytest.raises(IndexError):
        backend.fail_next(1, "no such GPU")


def test_limit_and_close() -> None:
    backend = SimBackend(2, start_ns=START, limit=3)
    assert len(take(backend, 3)) == 3
    assert backend.next_readings() is None
    assert backend.intervals_delivered == 3
    endless = SimBackend(1, start_ns=START)
    take(endless, 2)
    endless.close()
    assert endless.next_readings() is None


def test_not_realtime_never_sleeps() -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    take(SimBackend(1, start_ns=START, sleep=no_sleep), 50)


def test_realtime_paces_on_a_schedule_without_drift() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds + 0.01  # every sleep overshoots by 10 ms

    backend = SimBackend(1, start_ns=START, realtime=True, sleep=sleep, monotonic=lambda: now[0])
    take(backend, 4)
    assert slept == [1.0, 0.99, 0.99, 0.99]
    assert now[0] == pytest.approx(104.01)


def test_profile_is_validated_and_used() -> None:
    with pytest.raises(ValueError):
        SimProfile(hmma=(0.5, 1.5))
    with pytest.raises(ValueError):
        SimProfile(clock_mhz=(1000.0, 2500.0))
    idle = SimProfile(hmma=(0.0, 0.0), fp32=(0.0, 0.0), clock_mhz=(1980.0, 1980.0))
    (r,) = take(SimBackend(1, start_ns=START, profile=idle), 1)[0]
    assert r.pipe_busy is not None and r.pipe_busy[Pipe.HMMA] == 0.0
    assert r.sm_clock_mhz_s == pytest.approx(1980.0)


def test_a100_profile_has_no_gpm_and_reports_kernel_busy_time() -> None:
    batch = take(SimBackend(2, start_ns=START, profile=PROFILES["a100"]), 1)[0]
    for r in batch:
        assert (r.gpu.cc, r.gpu.sm_count, r.gpu.max_sm_clock_mhz) == ((8, 0), 108, 1410)
        assert r.pipe_busy is None and r.error is None
        assert r.utilization is not None and 0.2 <= r.utilization <= 0.9
        assert 1000 <= r.sm_clock_mhz_s <= 1410


def test_unknown_profile_names_a_compute_capability_the_rate_table_lacks() -> None:
    (r,) = take(SimBackend(1, start_ns=START, profile=PROFILES["unknown"]), 1)[0]
    assert rates_for(r.gpu.cc) is None
    assert r.pipe_busy is not None


def test_mig_profile_measures_each_instance_as_a_device() -> None:
    sim = SimBackend(2, seed=1, start_ns=START, profile=PROFILES["h100-mig"])
    gpus = sim.gpus()
    assert [(g.uuid, g.mig_instance, g.sm_count) for g in gpus[:3]] == [
        ("GPU-sim-1-0", "MIG-sim-1-0-0", 64),
        ("GPU-sim-1-0", "MIG-sim-1-0-1", 32),
        ("GPU-sim-1-0", "MIG-sim-1-0-2", 16),
    ]
    assert len(gpus) == 6 and {g.index for g in gpus[3:]} == {1}
    (batch,) = take(sim, 1)
    assert [r.processes[0].pid for r in batch] == [10000 + n for n in range(6)]
    assert all(r.energy_mj is None for r in batch)  # NVML has no energy per instance
    physical = sim.hardware_bindings(bytes(32))
    assert [(b.gpu.uuid, b.gpu.mig_instance, b.status) for b in physical] == [
        ("GPU-sim-1-0", "", BindingStatus.NOT_SUPPORTED),
        ("GPU-sim-1-1", "", BindingStatus.NOT_SUPPORTED),
    ]


def test_fail_next_can_name_a_profiler() -> None:
    backend = SimBackend(1, start_ns=START)
    backend.fail_next(0, "counters held", cause=GapCause.PROFILER_BUSY)
    (r,) = take(backend, 1)[0]
    assert (r.error, r.cause) == ("counters held", GapCause.PROFILER_BUSY)


def test_gpu_models_are_validated() -> None:
    with pytest.raises(ValueError, match="MIG"):
        SimGpuModel("x", 100, (9, 0), 1980, mig_sm_counts=(64, 64))
    with pytest.raises(ValueError, match="positive"):
        SimGpuModel("x", 0, (9, 0), 1980)
    with pytest.raises(ValueError, match="clock_mhz"):
        SimProfile(gpu=PROFILES["a100"].gpu)  # the default clock range exceeds an A100's
