"""What one ingest batch has accepted but not yet committed, seen together with the store.

The ingestor judges each record against its key's chain and its devices' measured time as the
store holds them PLUS the records accepted earlier in the same batch, so two records of one batch
cannot fork a chain or double-count a GPU-second between them.
"""

from __future__ import annotations

from typing import Protocol

from flopwatch.chain import Neighbours
from flopwatch.collector.store.base import ChainStore, NodeKeyStore
from flopwatch.collector.store.records import NodeRecord
from flopwatch.intervals import IntervalSet, overlaps
from flopwatch.keys import short_key_id
from flopwatch.verify.record import VerifiedRecord


class JudgingStore(NodeKeyStore, ChainStore, Protocol):
    """What a batch judges records against: node keys, chains and measured time."""


class PendingBatch:
    """The store's view plus what this batch accepted but has not committed yet."""

    def __init__(self, store: JudgingStore) -> None:
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
        pending = Neighbours.around(sequence, lambda s: self._chain.get((key_id, s)))
        return self._store.neighbours(key_id, sequence).or_else(pending)

    def overlap(self, record: VerifiedRecord) -> str | None:
        """Describe the first interval that overlaps measured time, and which key measured
        that time first; None if none overlaps."""
        for gpu, intervals in record.sums.spans.items():
            lo, hi = min(s for s, _ in intervals), max(e for _, e in intervals)
            held = IntervalSet(self._store.coverage(gpu, lo, hi))
            pending = self._coverage.get(gpu, IntervalSet())
            for start, end in intervals:
                if held.overlaps(start, end):
                    first = self._store.measured_by(gpu, start, end)
                elif pending.overlaps(start, end):
                    first = self._pending_measured_by(gpu, start, end)
                else:
                    continue
                by = (
                    ""
                    if first is None
                    else f" by key {short_key_id(first[0])} of node {first[1]!r}"
                )
                return f"GPU {gpu}: [{start}, {end}) overlaps time already measured{by}"
        return None

    def _pending_measured_by(self, gpu: str, start: int, end: int) -> tuple[str, str] | None:
        for r in self.records:
            if any(overlaps((s, e), (start, end)) for s, e in r.sums.spans.get(gpu, ())):
                return r.key_id, r.node_id
        return None

    def add(self, record: VerifiedRecord) -> None:
        self.records.append(record)
        self._chain[(record.key_id, record.sequence)] = (record.digest, record.previous_digest)
        for gpu, intervals in record.sums.spans.items():
            runs = self._coverage.setdefault(gpu, IntervalSet())
            for start, end in intervals:
                runs.add(start, end)
