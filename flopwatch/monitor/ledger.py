"""What counting verified entries changes, across every followed log. Pure.

The ledger holds what the monitor counted (totals, the GPU time covered, alerts fired) and
judges each verified entry against it and against the node key's chain, wherever in which log
the chain's other records were found (`lookup`, the state store's). An entry is counted, a
duplicate (the same record already counted, e.g. from another log: counted once), or a problem:
a chain fork (in one log or across two) or GPU time counted already. What changed since the
last `take` is a `Batch` that the state store writes in one transaction with each log's
position; if that fails, the caller rebuilds the ledger from the store.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flopwatch.chain import Neighbours, Verdict, judge
from flopwatch.keys import short_key_id
from flopwatch.monitor.coverage import Change, Coverage, Overlap
from flopwatch.monitor.events import (
    CHAIN_FORK,
    CHAIN_FORK_ACROSS_LOGS,
    DOUBLE_COUNTED,
    Alert,
    Problem,
)
from flopwatch.monitor.labels import Entities, labels_of
from flopwatch.monitor.node_keys import LogKey
from flopwatch.monitor.totals import (
    Figures,
    Threshold,
    TotalKey,
    add_record,
    crossed,
    crossed_windows,
)
from flopwatch.monitor.windows import DayKey, Windows, day_keys, window
from flopwatch.verify import VerifiedRecord
from flopwatch.verify.sums import DAY_NS


@dataclass(frozen=True)
class Held:
    """A counted record's place in its key's chain, and where it was logged."""

    digest: bytes
    previous_digest: bytes
    log: str
    leaf: int


# (key id, first sequence, last sequence) -> the records held in that range, by sequence
Lookup = Callable[[str, int, int], Mapping[int, Held]]


class Outcome(enum.Enum):
    COUNTED = "counted"
    DUPLICATE = "duplicate"
    PROBLEM = "problem"


@dataclass
class Batch:
    """Writes for the state store, in order."""

    records: list[tuple[str, int, Held]] = field(default_factory=list)  # key id, sequence
    coverage: list[Change] = field(default_factory=list)
    totals: dict[TotalKey, Figures] = field(default_factory=dict)  # new values
    alerts: list[Alert] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    keys: list[tuple[str, LogKey]] = field(default_factory=list)  # log, a node key as now known
    days: dict[DayKey, Figures] = field(default_factory=dict)  # day buckets' new values
    prune_before: int | None = None  # drop day buckets older than this UTC day
    counted: int = 0
    duplicates: int = 0
    gpu_intervals: int = 0


class Ledger:
    def __init__(
        self,
        *,
        lookup: Lookup,
        coverage: Coverage,
        totals: dict[TotalKey, Figures],
        fired: set[tuple[str, str, str]],
        thresholds: Iterable[Threshold] = (),
        entities: Entities | None = None,
        days: dict[tuple[str, str], dict[int, Figures]] | None = None,
        windows: Windows | None = None,
        clock_ns: Callable[[], int] = lambda: 0,
    ) -> None:
        self._lookup = lookup
        self.coverage = coverage
        self.totals = totals
        self.fired = fired
        self.thresholds = tuple(thresholds)
        self.entities = entities or Entities()
        self.days = days if days is not None else {}  # (kind, key) -> UTC day -> bucket
        self.windows = windows or Windows()
        self._clock_ns = clock_ns  # today, for the windows (the records' days are their own)
        self._first_kept: int | None = None  # the oldest day kept as of the last take
        self._touched_days: set[DayKey] = set()
        self._pending: dict[tuple[str, int], Held] = {}
        self._touched: set[TotalKey] = set()
        self._batch = Batch()

    def _neighbours(self, key_id: str, sequence: int) -> dict[int, Held]:
        held = dict(self._lookup(key_id, sequence - 1, sequence + 1))
        for s in (sequence - 1, sequence, sequence + 1):
            pending = self._pending.get((key_id, s))
            if pending is not None:
                held[s] = pending
        return held

    def count(self, log: str, leaf: int, record: VerifiedRecord) -> Outcome:
        """Judge and, if sound, count one verified entry (leaf `leaf` of log `log`)."""
        held = self._neighbours(record.key_id, record.sequence)

        def chain(s: int) -> tuple[bytes, bytes] | None:
            h = held.get(s)
            return None if h is None else (h.digest, h.previous_digest)

        j = judge(
            record.sequence,
            record.digest,
            record.previous_digest,
            Neighbours.around(record.sequence, chain),
        )
        if j.verdict is Verdict.DUPLICATE:
            self._batch.duplicates += 1
            return Outcome.DUPLICATE
        where = f"leaf {leaf}"
        if j.verdict is Verdict.FORK:
            assert j.conflict_at is not None
            other = held[j.conflict_at]
            reason = CHAIN_FORK if other.log == log else CHAIN_FORK_ACROSS_LOGS
            self._problem(
                Problem(
                    log,
                    reason,
                    where,
                    f"node {record.node_id!r} key {short_key_id(record.key_id)} sequence "
                    f"{record.sequence}: {j.detail} (leaf {other.leaf} of log {other.log!r})",
                )
            )
            return Outcome.PROBLEM
        claim = self.coverage.claim(record.sums.spans)
        if isinstance(claim, Overlap):
            self._problem(
                Problem(
                    log,
                    DOUBLE_COUNTED,
                    where,
                    f"node {record.node_id!r} claims GPU {claim.gpu!r} time "
                    f"[{claim.interval[0]}, {claim.interval[1]}) ns, which overlaps "
                    f"[{claim.other[0]}, {claim.other[1]}) counted already",
                )
            )
            return Outcome.PROBLEM
        h = Held(record.digest, record.previous_digest, log, leaf)
        self._pending[(record.key_id, record.sequence)] = h
        b = self._batch
        b.records.append((record.key_id, record.sequence, h))
        b.coverage.extend(claim)
        labels = labels_of(record.attestation, log, self.entities)
        self._touched |= add_record(self.totals, record.sums.jobs, labels)
        now = self._clock_ns()
        first, last = self.windows.first_kept(now), self.windows.last_kept(now)
        for (kind, key, day), s in day_keys(record.sums.account_days, log, self.entities):
            if first <= day <= last:
                self.days.setdefault((kind, key), {}).setdefault(day, Figures()).add(s)
                self._touched_days.add((kind, key, day))
        b.counted += 1
        b.gpu_intervals += sum(s[4] for s in record.sums.devices.values())
        return Outcome.COUNTED

    def _problem(self, p: Problem) -> None:
        self._batch.problems.append(p)

    def pending_leaves(self, log: str, key_id: str) -> list[int]:
        """Leaves of log `log` holding records of `key_id` counted in this batch."""
        return [h.leaf for (k, _), h in self._pending.items() if k == key_id and h.log == log]

    def learn(self, log: str, key: LogKey) -> None:
        """A node key log `log` enrolled or revoked (a key statement), in this batch."""
        self._batch.keys.append((log, key))

    def report(self, p: Problem) -> None:
        """A problem found outside `count` (an entry that fails verification), in this batch."""
        self._problem(p)

    def take(self) -> Batch:
        """What changed since the last take, with the alerts it fires; starts a new batch.
        (The alerts are in `fired` from now on: commit the batch, or rebuild the ledger.)"""
        b = self._batch
        b.alerts = crossed(self.thresholds, self.totals, self._touched, self.fired)
        today = self._clock_ns() // DAY_NS
        b.alerts += crossed_windows(
            self.thresholds,
            {(kind, key) for kind, key, _ in self._touched_days},
            lambda kind, key, n: window(self.days.get((kind, key), {}), today, n),
            self.fired,
        )
        b.totals = {k: self.totals[k] for k in self._touched}
        b.days = {(k, key, d): self.days[(k, key)][d] for k, key, d in self._touched_days}
        first = self._first_day()
        if first != self._first_kept:  # a new day: drop the buckets no window reaches
            b.prune_before = self._first_kept = first
            for buckets in self.days.values():
                for day in [d for d in buckets if d < first]:
                    del buckets[day]
        self._batch = Batch()
        self._touched = set()
        self._touched_days = set()
        self._pending.clear()
        return b

    def _first_day(self) -> int:
        return self.windows.first_kept(self._clock_ns())

    def window_totals(self, kind: str, key: str) -> tuple[Figures, ...]:
        """A total's rolling windows through today, in `windows.days` order."""
        today = self._clock_ns() // DAY_NS
        buckets = self.days.get((kind, key), {})
        return tuple(window(buckets, today, n) for n in self.windows.days)
