"""flopwatch.intervals: the one rule that no GPU-second counts twice, against a brute-force model
of measured time as a set of nanoseconds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.intervals import (
    Clash,
    IntervalSet,
    Merge,
    first_overlap,
    merge,
    overlaps,
)

Interval = tuple[int, int]


def instants(intervals: list[Interval]) -> set[int]:
    return {t for start, end in intervals for t in range(start, end)}


def shares_time(a: Interval, b: Interval) -> bool:
    return bool(instants([a]) & instants([b]))


def runs_of(time: set[int]) -> list[Interval]:
    """The maximal runs of consecutive instants: how measured time is held."""
    out: list[Interval] = []
    for t in sorted(time):
        if out and out[-1][1] == t:
            out[-1] = (out[-1][0], t + 1)
        else:
            out.append((t, t + 1))
    return out


intervals = st.tuples(st.integers(0, 30), st.integers(1, 8)).map(lambda p: (p[0], p[0] + p[1]))


@st.composite
def disjoint_runs(draw: st.DrawFn) -> list[Interval]:
    """Held runs: disjoint, and joined where they touch (as a store holds them)."""
    return runs_of(instants(draw(st.lists(intervals, max_size=5))))


def test_touching_intervals_do_not_overlap() -> None:
    assert not overlaps((0, 5), (5, 9))
    assert not overlaps((5, 9), (0, 5))
    assert overlaps((0, 5), (4, 9))
    assert overlaps((0, 9), (3, 4))


def test_merge_joins_runs_that_touch_end_to_start() -> None:
    merged = merge([(0, 5), (10, 15)], [(5, 10)])
    assert merged == Merge(runs=((0, 15),), removed=((0, 5), (10, 15)), added=((0, 15),))


def test_merge_names_the_new_interval_that_overlaps() -> None:
    assert merge([(0, 5)], [(7, 9), (4, 6)]) == Clash((4, 6), (0, 5))
    assert merge([(6, 9)], [(0, 7)]) == Clash((0, 7), (6, 9))
    assert merge([], [(0, 5), (2, 3)]) == Clash((2, 3), (0, 5))


def test_the_same_new_interval_twice_overlaps_itself() -> None:
    assert merge([], [(0, 5), (0, 5)]) == Clash((0, 5), (0, 5))


def test_first_overlap_gives_positions_in_order_of_start() -> None:
    assert first_overlap([(10, 20), (0, 5), (5, 10)]) is None
    assert first_overlap([(10, 20), (0, 5), (4, 10)]) == (1, 2)
    assert first_overlap([(3, 4), (0, 10)]) == (1, 0)


@settings(max_examples=300, deadline=None)
@given(disjoint_runs(), st.lists(intervals, max_size=5))
def test_merge_matches_the_model(held: list[Interval], new: list[Interval]) -> None:
    clash_in_model = any(shares_time(a, b) for i, a in enumerate(new) for b in [*held, *new[:i]])
    merged = merge(held, new)
    if clash_in_model:
        assert isinstance(merged, Clash)
        assert merged.interval in new
        assert shares_time(merged.interval, merged.other)
        return
    assert isinstance(merged, Merge)
    assert list(merged.runs) == runs_of(instants([*held, *new]))
    # What a store deletes and inserts takes the held runs to the merged ones.
    assert sorted((set(held) - set(merged.removed)) | set(merged.added)) == list(merged.runs)
    assert set(merged.removed) <= set(held)


@settings(max_examples=300, deadline=None)
@given(st.lists(intervals, max_size=8))
def test_first_overlap_matches_the_model(listed: list[Interval]) -> None:
    found = first_overlap(listed)
    pairs = [
        (i, j) for i in range(len(listed)) for j in range(i) if shares_time(listed[i], listed[j])
    ]
    if not pairs:
        assert found is None
        return
    assert found is not None
    i, j = found
    assert i != j and shares_time(listed[i], listed[j])


@settings(max_examples=300, deadline=None)
@given(st.lists(intervals, max_size=10))
def test_interval_set_holds_what_was_added_without_overlap(listed: list[Interval]) -> None:
    held = IntervalSet()
    kept: list[Interval] = []
    for start, end in listed:
        model = any(shares_time((start, end), k) for k in kept)
        assert held.overlaps(start, end) == model
        if not model:
            held.add(start, end)
            kept.append((start, end))
    for probe in [(t, t + w) for t in range(0, 40, 3) for w in (1, 4)]:
        assert held.overlaps(*probe) == any(shares_time(probe, k) for k in kept)
