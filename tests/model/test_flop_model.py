"""The FLOP model against the real H100 recording with exact ground truth."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwatch.agent.replay_report import replay
from flopwatch.jobs_file import load_jobs
from flopwatch.model import Counters, Pipe, Precision, estimate, physical_peak, upper_bound
from flopwatch.model.device import device_model
from flopwatch.model.figures import Method, interval_figures, whole_gpu_upper
from flopwatch.model.flops import PPM
from flopwatch.model.rates import fastest_known
from tests.paths import H100_TRACE

TRACE_DIR = H100_TRACE
TRUTH = {
    t["phase"]: t for t in map(json.loads, (TRACE_DIR / "truth.jsonl").read_text().splitlines())
}
# Phases that ran alone on the GPU (c1 and c2 ran at the same time in two processes).
SOLO = ["a1", "a2", "a3", "a4", "t1", "f1", "f2", "g1"]
# Phases the model must estimate within 5% given the right precision.
WITHIN_5_PERCENT = ["a1", "a2", "a3", "a4", "t1"]


@pytest.fixture(scope="module")
def result() -> dict[str, tuple[int, int]]:
    windows = load_jobs(TRACE_DIR / "jobs.json", source="replay")
    r = replay(TRACE_DIR / "trace.jsonl", windows)
    return {job: (f.flops, f.flops_upper) for job, f in r.jobs.items()}


@pytest.mark.parametrize("phase", WITHIN_5_PERCENT)
def test_estimate_within_5_percent_of_exact(result: dict[str, tuple[int, int]], phase: str) -> None:
    exact = TRUTH[phase]["flops"]
    est, _ = result[phase]
    assert abs(est / exact - 1) < 0.05, f"{phase}: {est:.4e} vs exact {exact:.4e}"


@pytest.mark.parametrize("phase", SOLO)
def test_upper_bound_never_below_exact(result: dict[str, tuple[int, int]], phase: str) -> None:
    _, upper = result[phase]
    assert upper >= TRUTH[phase]["flops"]


def test_nothing_measured_is_dropped(result: dict[str, tuple[int, int]]) -> None:
    # Whatever no job window covers lands in 'unattributed' rather than vanishing.
    assert result["unattributed"][0] > 0


def _counters(cc: tuple[int, int], busy: dict[Pipe, float], clock_mhz: int) -> Counters:
    elapsed = 132 * clock_mhz * 10**6  # one second
    return Counters(
        cc=cc,
        sm_count=132,
        max_sm_clock_mhz=1980,
        duration_ns=10**9,
        elapsed_sm_cycles=elapsed,
        active={p: round(f * elapsed) for p, f in busy.items()},
    )


def test_hopper_rates_per_precision() -> None:
    c = _counters((9, 0), {Pipe.HMMA: 0.5}, 1000)
    half = 132 * 1000 * 10**6 // 2
    assert estimate(c, Precision.BF16) == half * 4096
    assert estimate(c, Precision.TF32) == half * 2048
    assert estimate(c, Precision.FP8) == half * 8192
    assert estimate(c) == half * 4096  # undeclared: bf16
    # Upper bound: fastest HMMA rate (fp8) and the maximum clock.
    assert upper_bound(c) == 132 * 1980 * 10**6 // 2 * 8192


def test_unknown_gpu_is_bounded_by_fastest_known_rate() -> None:
    c = _counters((42, 0), {Pipe.HMMA: 0.5}, 1980)
    assert upper_bound(c) == 132 * 1980 * 10**6 // 2 * fastest_known(Pipe.HMMA)
    assert estimate(c) == upper_bound(c)


fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# Jobs sharing one interval: (share in ppm, declared precision).
SHARES = st.lists(
    st.tuples(st.integers(0, PPM), st.sampled_from(list(Precision))), min_size=1, max_size=5
)


@given(
    busy=st.fixed_dictionaries({p: fractions for p in Pipe}),
    clock=st.integers(min_value=1, max_value=1980),
    cc=st.sampled_from([(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]),
    precision=st.sampled_from(list(Precision)),
)
def test_upper_bound_dominates_every_estimate_and_peak_dominates_bound(
    busy: dict[Pipe, float], clock: int, cc: tuple[int, int], precision: Precision
) -> None:
    c = _counters(cc, busy, clock)
    assert estimate(c, precision) <= upper_bound(c) <= physical_peak(c)


@given(
    busy=st.fixed_dictionaries({p: fractions for p in Pipe}),
    clock=st.integers(min_value=1, max_value=1980),
    cc=st.sampled_from([(8, 0), (9, 0), (12, 0)]),
    shares=SHARES,
    utilization=st.integers(0, 10_000),
    method=st.sampled_from(list(Method)),
)
def test_interval_figures_are_each_jobs_share_of_the_whole_gpu(
    busy: dict[Pipe, float],
    clock: int,
    cc: tuple[int, int],
    shares: list[tuple[int, Precision]],
    utilization: int,
    method: Method,
) -> None:
    """What the agent signs and every verifier recomputes: per job, the floor of its share of
    the whole-GPU estimate at its own precision, and the whole GPU's bound while it has a share;
    for the interval, the jobs' estimates summed and the whole GPU's bound."""
    c = _counters(cc, busy, clock)
    util = utilization if method is Method.NVML_UTILIZATION else 0
    f = interval_figures(c, method, shares, util)
    upper = whole_gpu_upper(c, method, util)
    assert f.flops_upper == upper
    for (share, precision), job in zip(shares, f.jobs, strict=True):
        if method is Method.NVML_UTILIZATION:
            busy_hmma = c._replace(active={Pipe.HMMA: c.elapsed_sm_cycles * util // 10_000})
            whole = estimate(busy_hmma, precision)
        else:
            whole = estimate(c, precision)
        assert job.flops_estimate == whole * share // PPM
        assert job.flops_upper == (upper if share else 0)
    assert f.flops_estimate == sum(j.flops_estimate for j in f.jobs)


@given(
    busy=st.fixed_dictionaries({p: fractions for p in Pipe}),
    clock=st.integers(min_value=0, max_value=2100),
    cc=st.sampled_from([(8, 0), (8, 6), (9, 0), (10, 0), (12, 0)]),
    shares=SHARES,
    utilization=st.integers(0, 10_000),
    method=st.sampled_from(list(Method)),
    duration_ms=st.integers(1, 5000),
)
def test_the_device_model_computes_the_reference_figures(
    busy: dict[Pipe, float],
    clock: int,
    cc: tuple[int, int],
    shares: list[tuple[int, Precision]],
    utilization: int,
    method: Method,
    duration_ms: int,
) -> None:
    """What the agent signs and verifiers recompute (DeviceModel) is the model as stated one
    figure at a time (interval_figures over Counters), to the FLOP, for any device and shares;
    clocks above the maximum and zero are included."""
    duration = duration_ms * 10**6
    elapsed = 132 * clock * duration // 1000
    c = Counters(cc, 132, 1980, duration, elapsed, {p: round(f * elapsed) for p, f in busy.items()})
    util = utilization if method is Method.NVML_UTILIZATION else 0
    model = device_model(cc, 132, 1980)
    got = model.figures(
        duration,
        elapsed,
        list(c.active.items()),
        method=method,
        shares=shares,
        utilization_centipercent=util,
    )
    assert got == interval_figures(c, method, shares, util)
    assert model.max_elapsed(duration) == c.max_elapsed_sm_cycles
    assert model.physical_peak(duration) == physical_peak(c)
