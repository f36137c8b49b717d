"""GPU time already counted, per device, across every followed log. Pure.

Held as disjoint runs joined where they touch (`flopwatch.intervals`, the one overlap rule the
collector and the offline verifier use too). A record is counted only if none of its intervals
shares time with a run: its claim either clashes (nothing changes) or returns what the state
store deletes and inserts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flopwatch.intervals import Clash, Interval, merge


@dataclass(frozen=True)
class Change:
    """Runs of one device to delete, then runs to insert."""

    gpu: str
    removed: tuple[Interval, ...]
    added: tuple[Interval, ...]


@dataclass(frozen=True)
class Overlap:
    gpu: str
    interval: Interval  # the record's
    other: Interval  # what it overlaps: a counted run, or another interval of the record


_MIN = -(1 << 63)


class Coverage:
    """Counted runs per device, sorted by start."""

    def __init__(self, runs: Iterable[tuple[str, int, int]] = ()) -> None:
        self._runs: dict[str, list[Interval]] = {}
        for gpu, start, end in sorted(runs):
            self._runs.setdefault(gpu, []).append((start, end))

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs.values())

    def _near(self, gpu: str, spans: Sequence[Interval]) -> tuple[int, int]:
        """Indices [i, j) of the runs that may overlap or touch `spans`."""
        runs = self._runs.get(gpu, [])
        lo = min(s for s, _ in spans)
        hi = max(e for _, e in spans)
        i = _first_end(runs, lo)  # runs ending before `lo` neither overlap nor touch
        j = bisect_left(runs, (hi + 1, _MIN))  # runs starting after `hi` neither
        return i, max(i, j)

    def claim(self, spans: Mapping[str, Sequence[Interval]]) -> list[Change] | Overlap:
        """Count `spans` (device -> intervals): the changes made, or the first overlap (and
        nothing counted)."""
        plans = []
        for gpu, ivs in spans.items():
            if not ivs:
                continue
            i, j = self._near(gpu, ivs)
            runs = self._runs.get(gpu, [])
            result = merge(runs[i:j], ivs)
            if isinstance(result, Clash):
                return Overlap(gpu, result.interval, result.other)
            plans.append((gpu, i, j, result))
        changes = []
        for gpu, i, j, result in plans:
            self._runs.setdefault(gpu, [])[i:j] = list(result.runs)
            changes.append(Change(gpu, result.removed, result.added))
        return changes


def _first_end(runs: Sequence[Interval], lo: int) -> int:
    """The first run whose end is at or after `lo` (runs are disjoint and sorted, so their
    ends are sorted too)."""
    a, b = 0, len(runs)
    while a < b:
        mid = (a + b) // 2
        if runs[mid][1] < lo:
            a = mid + 1
        else:
            b = mid
    return a
