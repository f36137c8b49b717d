"""Read-only questions about jobs, runs, accounts and nodes, answered from a store.

Used by the gRPC servicer (on the ingest thread, which owns the store's connection) and by
`flopwatch nodes list --db` (its own connection). Every FLOP figure here is an exact int; each
name says whether it is an estimate or an upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from flopwatch.collector.alerts.liveness import is_silent
from flopwatch.collector.config import AccountWindows
from flopwatch.collector.lineage import own_compute
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import (
    AccountTotal,
    GpuTotal,
    JobDelta,
    JobGpu,
    JobTotal,
    NodeRecord,
    PendingKey,
    RunTotal,
    WindowTotal,
)
from flopwatch.lineage import Compute, Lineage, RunKey, lineage_of
from flopwatch.verify.sums import DAY_NS

SummaryStatus = Literal["enrolled", "revoked", "pending"]


@dataclass(frozen=True)
class NodeSummary:
    """One node key: trust status, liveness, and what its GPUs measured (whole-GPU sums)."""

    key_id: str
    node_id: str
    status: SummaryStatus  # "pending": presented itself, awaits an operator's approval
    enrolled_at_ns: int | None
    revoked_at_ns: int | None
    last_record_ns: int | None  # collector clock of its last committed record
    pending_seen_ns: int | None  # "pending" keys: when it last presented itself
    silent: bool  # enrolled and quiet for longer than the collector's --silent-after
    flops_estimate: int
    flops_upper: int
    gpus: int
    gpu_intervals: int
    # Enrolled, and its latest record was answered retry because its time ran ahead of the
    # collector's clock, since the collector last committed one of its records: its records
    # wait in its spool (`NodeRecord.clock_ahead`).
    clock_ahead: bool = False
    # The latest such record: how far ahead its time ended, and when it was noted (collector
    # clock); kept after the clock is right again (None: never ahead).
    clock_ahead_s: float | None = None
    clock_ahead_at_ns: int | None = None

    @property
    def healthy(self) -> bool:
        """Enrolled, not silent, clock not ahead."""
        return self.status == "enrolled" and not self.silent and not self.clock_ahead

    @classmethod
    def of(cls, node: NodeRecord, gpus: list[GpuTotal], silent: bool) -> NodeSummary:
        return cls(
            key_id=node.key_id,
            node_id=node.node_id,
            status=node.status,
            enrolled_at_ns=node.enrolled_at_ns,
            revoked_at_ns=node.revoked_at_ns,
            last_record_ns=node.last_record_ns,
            pending_seen_ns=None,
            silent=silent,
            flops_estimate=sum(g.flops_estimate for g in gpus),
            flops_upper=sum(g.flops_upper for g in gpus),
            gpus=len(gpus),
            gpu_intervals=sum(g.gpu_intervals for g in gpus),
            clock_ahead=node.status == "enrolled" and node.clock_ahead,
            clock_ahead_s=None if node.clock_ahead_ns is None else node.clock_ahead_ns / 1e9,
            clock_ahead_at_ns=node.clock_ahead_at_ns,
        )

    @classmethod
    def pending(cls, key: PendingKey) -> NodeSummary:
        none = (None, None, None)  # not enrolled, not revoked, no record
        return cls(key.key_id, key.node_id, "pending", *none, key.last_seen_ns, False, 0, 0, 0, 0)


@dataclass(frozen=True)
class AccountSummary:
    """An account's totals since records were first held, and over each trailing window of UTC
    days through `today` (days since 1970-01-01)."""

    total: AccountTotal
    today: int
    windows: tuple[WindowTotal, ...]

    @property
    def windows_end_ns(self) -> int:
        """Where every window ends: the end of `today` (UTC)."""
        return (self.today + 1) * DAY_NS


class Query:
    """Paged reads of jobs, a job's GPUs, runs, accounts (with `windows`, trailing numbers of
    UTC days), and node keys."""

    def __init__(
        self,
        store: Store,
        *,
        silent_after_s: float,
        windows: Sequence[int] = AccountWindows().days,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self.silent_after_s = silent_after_s
        self.windows = tuple(windows)
        self._now_ns = now_ns

    def job_page(self, prefix: str, after: str, limit: int) -> list[JobTotal]:
        return self._store.job_page(prefix, after, limit)

    def job(self, job_id: str) -> JobTotal | None:
        return self._store.totals_for([job_id]).get(job_id)

    def job_gpu_page(self, job_id: str, after: tuple[str, str], limit: int) -> list[JobGpu]:
        return self._store.job_gpu_page(job_id, after, limit)

    def run_page(
        self, account: str | None, prefix: str, after: tuple[str, str], limit: int
    ) -> list[RunTotal]:
        return self._store.run_page(account, prefix, after, limit)

    def run_recent(self, runs: Sequence[RunTotal]) -> dict[RunKey, JobDelta]:
        """Each run's sums over its last days of measurement (its current rate)."""
        return self._store.run_recent([(t.account, t.run) for t in runs])

    def lineages(self, runs: Sequence[RunTotal]) -> dict[RunKey, Lineage]:
        """The lineage of each run of a page: one read of the declared parents, and the own
        totals of ancestors not on the page (at most MAX_LINEAGE_DEPTH each)."""
        parents = self._store.lineage_parents()
        held = {(r.account, r.run): r for r in runs}

        def own(key: RunKey) -> Compute:
            r = held.get(key)
            if r is None:
                return own_compute(self._store, key)
            return Compute(r.flops_estimate, r.flops_upper, r.gpu_time_fs, r.energy_nj)

        return {key: lineage_of(key, parents, own) for key in held}

    def account_page(self, prefix: str, after: str | None, limit: int) -> list[AccountSummary]:
        """Up to `limit` accounts after `after`, each with its trailing windows through today
        (UTC, by this collector's clock)."""
        totals = self._store.account_page(prefix, after, limit)
        today = self._now_ns() // DAY_NS
        windows = self._store.account_windows([t.account for t in totals], today, self.windows)
        return [AccountSummary(t, today, windows[t.account]) for t in totals]

    def node_page(self, after: str, limit: int) -> list[NodeSummary]:
        """Up to `limit` node keys (enrolled, revoked and awaiting approval) after `after`."""
        keys: list[NodeRecord | PendingKey] = [
            *self._store.nodes(),
            *self._store.pending_keys(),
        ]
        page = sorted((k for k in keys if k.key_id > after), key=lambda k: k.key_id)[:limit]
        totals: dict[str, list[GpuTotal]] = {}
        for g in self._store.gpu_totals([k.key_id for k in page]):
            totals.setdefault(g.key_id, []).append(g)
        now = self._now_ns()
        silent_after_ns = int(self.silent_after_s * 1e9)
        return [
            NodeSummary.pending(k)
            if isinstance(k, PendingKey)
            else NodeSummary.of(k, totals.get(k.key_id, []), is_silent(k, now, silent_after_ns))
            for k in page
        ]
