from hypothesis import given
from hypothesis import strategies as st

from flopwatch.attribution import UNATTRIBUTED, JobWindow, attribute, to_ppm
from flopwatch.model import Precision
from flopwatch.model.flops import PPM

S = 10**9


def shares(result: list) -> dict[str, int]:
    return {a.job_id: a.share_ppm for a in result}


def test_job_covering_interval_gets_its_process_share() -> None:
    w = [JobWindow("train", pid=7, start_ns=0, end_ns=10 * S, precision=Precision.FP8)]
    out = attribute(S, 2 * S, [(7, 1.0)], w)
    assert shares(out) == {"train": PPM}
    assert out[0].precision is Precision.FP8


def test_window_edge_prorates_and_rest_is_unattributed() -> None:
    w = [JobWindow("j", pid=7, start_ns=S + S // 4, end_ns=10 * S)]
    assert shares(attribute(S, 2 * S, [(7, 1.0)], w)) == {"j": 750_000, UNATTRIBUTED: 250_000}


def test_two_processes_split_by_share() -> None:
    w = [JobWindow("a", 1, 0, 10 * S), JobWindow("b", 2, 0, 10 * S)]
    assert shares(attribute(S, 2 * S, [(1, 0.25), (2, 0.75)], w)) == {"a": 250_000, "b": 750_000}


def test_work_without_process_is_unattributed() -> None:
    assert shares(attribute(S, 2 * S, [], [])) == {UNATTRIBUTED: PPM}


def test_open_window_covers_until_ended() -> None:
    w = [JobWindow("j", pid=3, start_ns=0, end_ns=None)]
    assert shares(attribute(5 * S, 6 * S, [(3, 1.0)], w)) == {"j": PPM}


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_ppm_always_sums_exactly(weights: list[float]) -> None:
    if sum(weights) <= 0:
        return
    out = to_ppm(weights)
    assert sum(out) == PPM
    assert all(p >= 0 for p in out)


@given(
    procs=st.lists(
        st.tuples(st.integers(1, 5), st.floats(min_value=0.01, max_value=1)), max_size=5
    ),
    starts=st.lists(st.integers(0, 3 * S), min_size=0, max_size=5),
)
def test_attribution_shares_sum_to_one_million(procs: list, starts: list) -> None:
    total = sum(s for _, s in procs)
    procs = [(p, s / total) for p, s in procs] if total else []
    windows = [
        JobWindow(f"j{i}", pid=i % 5 + 1, start_ns=t, end_ns=t + S) for i, t in enumerate(starts)
    ]
    out = attribute(S, 2 * S, procs, windows)
    assert sum(a.share_ppm for a in out) == PPM
