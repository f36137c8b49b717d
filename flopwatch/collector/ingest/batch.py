"""What one ingest batch has accepted but not yet committed, seen together with the store.

The ingestor judges each record against its key's chain and its devices' measured time as the
store holds them PLUS the records accepted earlier in the same batch, so two records of one batch
cannot fork a chain or double-count a GPU-second between them.

What the store holds is read for the whole batch at once where the records are known before
judging (`prefetch`: those a verify worker verified), in a few statements instead of one per
record and device; a record not prefetched is read on its own. Measured time is read before
the chain, as for one record (see `Ingestor._judge`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Protocol

from flopwatch.chain import Neighbours
from flopwatch.collector.store.base import ChainStore, NodeKeyStore
from flopwatch.collector.store.common import ChainRows, Span
from flopwatch.collector.store.records import NodeRecord
from flopwatch.intervals import IntervalSet, overlaps
from flopwatch.keys import short_key_id
from flopwatch.verify.record import VerifiedRecord

_LAST = 2**63  # above any nanosecond time: (lo, _LAST) sorts after every (lo, hi)
_NONE = IntervalSet()  # no time (never added to)


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
        # Prefetched: per device, the time ranges read (joined, ascending) and the held runs
        # that meet them; per key, the chain around the prefetched sequences.
        self._read: dict[str, list[tuple[int, int]]] = {}
        self._held: dict[str, IntervalSet] = {}
        self._held_chain: ChainRows = {}
        self._prefetched: set[tuple[str, int]] = set()

    def prefetch(self, records: Sequence[VerifiedRecord]) -> None:
        """Read what the store holds around `records` (measured time of their devices, then
        their keys' chains) in a few statements, for `overlap` and `neighbours` to use.

        A device's spans that meet or touch are read as one range: a node's consecutive
        records in a batch cost one look-up, not one each."""
        ranges = _joined(sorted(_span(r, g) for r in records for g in r.sums.spans))
        found = self._store.coverage_of(ranges)
        for gpu, lo, hi in ranges:
            self._read.setdefault(gpu, []).append((lo, hi))
        runs: dict[str, set[tuple[int, int]]] = {}
        for (gpu, _, _), held in found.items():
            runs.setdefault(gpu, set()).update(held)
        self._held = {gpu: IntervalSet(sorted(r)) for gpu, r in runs.items()}
        wanted = {(r.key_id, r.sequence) for r in records}
        self._held_chain = self._store.chain_around(wanted)
        self._prefetched = wanted

    def _held_time(self, span: Span) -> IntervalSet:
        """The held runs of the span's device that may meet it: prefetched if the span lies
        in a range read, else read now."""
        gpu, lo, hi = span
        read = self._read.get(gpu, ())
        i = bisect_right(read, (lo, _LAST)) - 1
        if i >= 0 and read[i][1] >= hi:
            return self._held.get(gpu) or IntervalSet()
        return IntervalSet(self._store.coverage(gpu, lo, hi))

    def node(self, key_id: str, *, refresh: bool = False) -> NodeRecord | None:
        # Read once per batch: a revocation takes effect from the next batch on.
        if refresh or key_id not in self._nodes:
            self._nodes[key_id] = self._store.node(key_id)
        return self._nodes[key_id]

    def neighbours(self, key_id: str, sequence: int) -> Neighbours:
        pending = Neighbours.around(sequence, lambda s: self._chain.get((key_id, s)))
        if (key_id, sequence) in self._prefetched:
            held = Neighbours.around(sequence, self._held_chain.get(key_id, {}).get)
        else:
            held = self._store.neighbours(key_id, sequence)
        return held.or_else(pending)

    def overlap(self, record: VerifiedRecord) -> str | None:
        """Describe the first interval that overlaps measured time, and which key measured
        that time first; None if none overlaps."""
        for gpu, intervals in record.sums.spans.items():
            span = _span(record, gpu)
            held = self._held_time(span)
            pending = self._coverage.get(gpu, _NONE)
            if not (held.overlaps(span[1], span[2]) or pending.overlaps(span[1], span[2])):
                continue  # nothing meets the time all its intervals lie in
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
            for start, end in _touching_joined(intervals):
                runs.add(start, end)


def _span(record: VerifiedRecord, gpu: str) -> Span:
    """The device's time a record's intervals on it lie in: (gpu, first start, last end), from
    the device's sums."""
    figures = record.sums.devices[gpu]
    return gpu, figures[2], figures[3]


def _touching_joined(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """A record's disjoint intervals on one device (the verifier refuses overlapping ones),
    those that touch end to start joined: fewer runs for the batch's pending time to hold."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _joined(spans: Sequence[Span]) -> list[Span]:
    """Sorted spans, those of one device that meet or touch joined into one."""
    out: list[Span] = []
    for gpu, lo, hi in spans:
        if out and out[-1][0] == gpu and lo <= out[-1][2]:
            out[-1] = (gpu, out[-1][1], max(hi, out[-1][2]))
        else:
            out.append((gpu, lo, hi))
    return out
