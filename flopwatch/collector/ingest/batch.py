"""What one ingest batch has accepted but not yet committed, seen together with the store.

The ingestor judges each record against its key's chain and its devices' measured time as the
store holds them PLUS the records accepted earlier in the same batch, so two records of one batch
cannot fork a chain or double-count a GPU-second between them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from flopwatch.chain import Neighbours
from flopwatch.collector.store.base import NodeRecord, Store
from flopwatch.verify.record import VerifiedRecord


class IntervalSet:
    """Disjoint half-open [start, end) intervals, kept sorted by start."""

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in runs:
            self.add(start, end)

    def overlaps(self, start: int, end: int) -> bool:
        # Of the runs starting before `end`, the last one reaches furthest (they are disjoint).
        i = bisect_left(self._starts, end)
        return i > 0 and self._ends[i - 1] > start

    def add(self, start: int, end: int) -> None:
        i = bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)


class PendingBatch:
    """The store's view plus what this batch accepted but has not committed yet."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.records: list[VerifiedRecord] = []
        self._chain: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._coverage: dict[str, IntervalSet] = {}
        self._nodes: dict[str, NodeRecord | None] = {}

    def node(self, key_id: str, *, refresh: bool = False) -> NodeRecord | None:
        # Read once per batch: a revocation takes effect from the next batch on.
        if refresh or key_id not in self._nodes:
            self._nodes[key_id] = self._store.node(key_id)
        return self._nodes[key_id]

    def neighbours(self, key_id: str, sequence: int) -> Neighbours:
        held = self._store.neighbours(key_id, sequence)
        same, before, after = (self._chain.get((key_id, sequence + i)) for i in (0, -1, 1))
        return Neighbours(
            same=held.same if held.same is not None else (same[0] if same else None),
            before=held.before if held.before is not None else (before[0] if before else None),
            after_previous=(
                held.after_previous
                if held.after_previous is not None
                else (after[1] if after else None)
            ),
        )

    def overlap(self, record: VerifiedRecord) -> str | None:
        """Describe the first interval that overlaps measured time, or None."""
        for gpu, intervals in record.sums.spans.items():
            lo, hi = min(s for s, _ in intervals), max(e for _, e in intervals)
            held = IntervalSet(self._store.coverage(gpu, lo, hi))
            pending = self._coverage.get(gpu, IntervalSet())
            for start, end in intervals:
                if held.overlaps(start, end) or pending.overlaps(start, end):
                    return f"GPU {gpu}: [{start}, {end}) overlaps time already measured"
        return None

    def add(self, record: VerifiedRecord) -> None:
        self.records.append(record)
        self._chain[(record.key_id, record.sequence)] = (record.digest, record.previous_digest)
        for gpu, intervals in record.sums.spans.items():
            runs = self._coverage.setdefault(gpu, IntervalSet())
            for start, end in intervals:
                runs.add(start, end)
