"""Measured time as disjoint half-open runs: the one rule that no GPU-second counts twice. Pure.

An interval is [start, end) in nanoseconds with start < end. Two intervals overlap when they
share an instant; intervals that only touch (one ends where the next starts) do not, and are
joined into one run. The ingest batch (`IntervalSet`), both stores (`merge`) and the offline
verifier (`first_overlap`) all decide overlap here, so they cannot disagree. Every function
assumes non-empty intervals (the record verifier refuses an interval with end <= start).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Interval = tuple[int, int]


def overlaps(a: Interval, b: Interval) -> bool:
    """True if the two intervals share time (touching end to start is not sharing)."""
    return a[0] < b[1] and b[0] < a[1]


class IntervalSet:
    """Disjoint half-open [start, end) intervals, kept sorted by start."""

    def __init__(self, runs: Iterable[Interval] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in runs:
            self.add(start, end)

    def overlaps(self, start: int, end: int) -> bool:
        # Of the runs starting before `end`, the last one reaches furthest (they are disjoint).
        i = bisect_left(self._starts, end)
        return i > 0 and self._ends[i - 1] > start

    def add(self, start: int, end: int) -> None:
        """Hold [start, end); the caller has checked it does not overlap (`overlaps`)."""
        i = bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)


@dataclass(frozen=True)
class Clash:
    """A new interval that overlaps measured time: a held run or another new interval."""

    interval: Interval  # the new interval
    other: Interval  # what it overlaps


@dataclass(frozen=True)
class Merge:
    """Held runs after new intervals joined them: what a store deletes and inserts."""

    runs: tuple[Interval, ...]  # every run, held and new, joined where they touch, ascending
    removed: tuple[Interval, ...]  # held runs that are runs no longer (joined into a larger one)
    added: tuple[Interval, ...]  # runs not held before


def merge(held: Iterable[Interval], new: Iterable[Interval]) -> Merge | Clash:
    """Disjoint runs `held` plus intervals `new`, joined where they touch end to start.

    A Clash (and nothing merged) if any new interval overlaps a held run or another new one.
    """
    held = list(held)
    new = list(new)
    fresh = set(new)
    runs: list[Interval] = []
    last: Interval | None = None  # the interval that ends the last run
    for piece in sorted([*held, *new]):
        start, end = piece
        if runs and last is not None and runs[-1][1] > start:
            # The new one of the two: a held run never overlaps another held run.
            return Clash(piece, last) if piece in fresh else Clash(last, piece)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append(piece)
        last = piece
    before = set(held)
    after = set(runs)
    return Merge(
        runs=tuple(runs),
        removed=tuple(r for r in held if r not in after),
        added=tuple(r for r in runs if r not in before),
    )


def first_overlap(intervals: Sequence[Interval]) -> tuple[int, int] | None:
    """Positions (i, j) in `intervals` of the first two that share time, in order of start (ties
    by end, then position): i starts first. None if no two overlap."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i], i))
    for i, j in itertools.pairwise(order):
        if intervals[j][0] < intervals[i][1]:
            return i, j
    return None
