"""Parent runs the workloads declare in their records, declared at the collector.

A record's attribution may name the parent of its run (JobShare.run_parent: a run NAME of the
record's own account; flopwatch/verify/record.py checks its syntax, flopwatch.verify.sums
collects it per run). After a batch is committed, `WorkloadParents.after_commit` declares each
run so named that has no lineage yet, through the code path of `flopwatch runs declare`
(flopwatch.collector.lineage.declare: the collector key signs the declaration, the store keeps
it and appends it to the transparency log in one transaction, flopwatch.lineage checks it),
marked as the workload's word ("declared_by": "workload", with the node key id and sequence of
the record that named the parent).

Refused, with a reason that is a metric label (`REASONS`) and a log line once per (run,
parent): a parent this collector holds no run of ("unknown_parent"), the run itself ("self"), a
cycle ("cycle"), a chain too deep ("too_deep"), a run or class the declaration rules refuse
("invalid"), a run that derives from another parent already ("other_parent": a declaration is
never changed, so the operator's, made first, always wins). An unknown parent is not final: the
run is kept pending and declared again when the parent's records arrive in a batch, or when the
run's own records come again at least `RETRY_S` after the last try (the parent's records may
reach another collector sharing the database). Past `MAX_PENDING` runs, the one waiting longest
is let go: its own next records try again. A store failure
leaves the run to the next batch naming it. Nothing here touches the records: their compute is
committed before, whatever becomes of the declaration.

Cost: per batch, one attribute read per record (`sums.run_parents`, empty for almost all); for
a run whose lineage is declared as its records name it, one set lookup. The lineage known is
read once at start and refreshed when a declaration is refused as made meanwhile, and by
`refresh` (the collector calls it every `CollectorConfig.lineage_check_s` to find the
operator's declarations, whose derived-run alerts are then decided at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flopwatch.collector.lineage import declare
from flopwatch.collector.store.base import Store
from flopwatch.errors import LineageError, StoreError
from flopwatch.identifiers import shown
from flopwatch.keys import SigningKey
from flopwatch.lineage import LocalParent, Parent, RunKey
from flopwatch.runs import CLASS_BIT, WorkloadClass, shown_account
from flopwatch.statements import DECLARED_BY_WORKLOAD
from flopwatch.verify.record import VerifiedRecord

log = logging.getLogger(__name__)

REASONS = ("unknown_parent", "self", "cycle", "too_deep", "invalid", "other_parent")
MAX_PENDING = 10_000  # runs whose parent is unknown yet, kept to be declared again
MAX_REMEMBERED = 100_000  # refused (run, parent) pairs remembered, each logged once
RETRY_S = 60.0  # a pending run is tried again on its own records at most this often


@dataclass(frozen=True)
class _Named:
    """A parent a record names for its run."""

    parent: str
    workload_class: WorkloadClass
    record: tuple[str, int]  # (node key id, sequence)


def _class_of(bits: int) -> WorkloadClass:
    """The class a run's records declare: the first known one, in `CLASS_BIT` order."""
    for c, bit in CLASS_BIT.items():
        if bits & bit and c is not WorkloadClass.UNKNOWN:
            return c
    return WorkloadClass.UNKNOWN


class WorkloadParents:
    """Declares the parents records name; see the module docstring. Used from the ingest
    thread; `counts` may be read from any (the metrics scrape)."""

    def __init__(
        self,
        store: Store,
        signer: SigningKey,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = MAX_PENDING,
        retry_s: float = RETRY_S,
    ) -> None:
        self._store = store
        self._signer = signer
        self._now_ns = now_ns
        self._clock = clock
        self._max_pending = max_pending
        self._retry_s = retry_s
        self._parents: dict[RunKey, Parent] = store.lineage_parents()
        # (run, parent name) pairs whose lineage is declared as named: the steady state
        self._settled: set[tuple[RunKey, str]] = set()
        self._pending: dict[RunKey, tuple[_Named, float]] = {}  # unknown parent, last try
        self._refused: set[tuple[RunKey, str]] = set()  # counted and logged already
        self._final: set[tuple[RunKey, str]] = set()  # refused for good: not tried again
        self._lock = threading.Lock()
        self._declared = 0
        self._refusals = dict.fromkeys(REASONS, 0)

    @property
    def lineage(self) -> Mapping[RunKey, Parent]:
        """The declared lineage as last read or declared here (`refresh` reads it again): what
        the ingest thread's run alerts take a run's parent from, without a read per commit."""
        return self._parents

    def counts(self) -> tuple[int, dict[str, int]]:
        """(runs declared from records, refusals by reason) since start."""
        with self._lock:
            return self._declared, dict(self._refusals)

    def after_commit(self, records: Sequence[VerifiedRecord]) -> list[RunKey]:
        """Declare the parents the committed `records` name for runs without a lineage; return
        the runs declared (their run alerts are to be decided now)."""
        named: dict[RunKey, _Named] = {}
        for r in records:
            parents = r.sums.run_parents
            if not parents:
                continue
            for key, parent in parents.items():
                if (key, parent) in self._settled:
                    continue
                held = self._parents.get(key)
                if held is not None:
                    if held == LocalParent((key[0], parent)):
                        self._settle(key, parent)
                    else:
                        self._refuse(key, parent, "other_parent", _other(key, held))
                    continue
                if key not in named:
                    bits = r.sums.run_classes.get(key, 0)
                    named[key] = _Named(parent, _class_of(bits), (r.key_id, r.sequence))
        now = self._clock()
        todo = {}
        for key, n in named.items():
            pending = self._pending.get(key)
            if pending is None and (key, n.parent) in self._final:
                continue  # refused for good (a cycle, say); logged already
            if pending is None or now - pending[1] >= self._retry_s:
                todo[key] = n
        if self._pending:
            arrived = {k for r in records for k in r.sums.runs}
            for key, (n, _) in list(self._pending.items()):
                if (key[0], n.parent) in arrived:
                    todo.setdefault(key, n)
        return [key for key, n in todo.items() if self._declare(key, n, now)]

    def _settle(self, key: RunKey, parent: str) -> None:
        if len(self._settled) >= MAX_REMEMBERED:
            self._settled.clear()
        self._settled.add((key, parent))

    def refresh(self) -> list[RunKey]:
        """Read the lineage the store holds again; return the runs declared since the last
        read by others (the operator's `flopwatch runs declare`, another collector)."""
        held = self._store.lineage_parents()
        new = [key for key in held if key not in self._parents]
        self._parents = held
        for key in new:
            self._pending.pop(key, None)
        return new

    def _declare(self, key: RunKey, n: _Named, now: float) -> bool:
        parent = (key[0], n.parent)
        try:
            declare(
                self._store,
                self._signer,
                key,
                n.workload_class,
                self._now_ns(),
                parent=parent,
                declared_by=DECLARED_BY_WORKLOAD,
                record=n.record,
            )
        except StoreError as e:  # the next batch naming it tries again
            log.error("cannot declare run %s's parent from its records: %s", shown(key[1]), e)
            return False
        except LineageError as e:
            return self._refused_now(key, n, now, e)
        self._pending.pop(key, None)
        self._parents[key] = LocalParent(parent)
        self._settle(key, n.parent)
        with self._lock:
            self._declared += 1
        log.info(
            "run %s of account %s declared derived from run %s, as its records say (record %s/%d)",
            shown(key[1]),
            shown_account(key[0]),
            shown(n.parent),
            n.record[0][:16],
            n.record[1],
        )
        return True

    def _refused_now(self, key: RunKey, n: _Named, now: float, e: LineageError) -> bool:
        if e.reason == "declared":  # declared meanwhile (the operator, another collector)
            self._pending.pop(key, None)
            try:
                self.refresh()
            except StoreError as err:
                log.error("cannot read the run lineage again: %s", err)
                return False
            held = self._parents.get(key)
            if held is not None and held != LocalParent((key[0], n.parent)):
                self._refuse(key, n.parent, "other_parent", _other(key, held))
            return False
        if e.reason == "unknown_parent":
            self._wait(key, n, now)
        else:
            if len(self._final) >= MAX_REMEMBERED:
                self._final.clear()
            self._final.add((key, n.parent))
        reason = e.reason if e.reason in REASONS else "invalid"
        self._refuse(key, n.parent, reason, str(e))
        return False

    def _wait(self, key: RunKey, n: _Named, now: float) -> None:
        """Keep `key` pending; past `max_pending` runs, the one waiting longest is let go (its
        next records try again, and keep it pending then)."""
        if key not in self._pending and len(self._pending) >= self._max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            log.info(
                "%d runs wait for their parent to be known; run %s is tried again only on its "
                "next records",
                self._max_pending,
                shown(oldest[1]),
            )
        self._pending[key] = (n, now)

    def _refuse(self, key: RunKey, parent: str, reason: str, why: str) -> None:
        """Count and log a refusal, once per (run, parent)."""
        if (key, parent) in self._refused:
            return
        if len(self._refused) >= MAX_REMEMBERED:
            self._refused.clear()
        self._refused.add((key, parent))
        with self._lock:
            self._refusals[reason] += 1
        log.warning(
            "run %s of account %s: its records name parent run %s, not declared (%s): %s; "
            "its compute is counted as before",
            shown(key[1]),
            shown_account(key[0]),
            shown(parent),
            reason,
            why,
        )


def _other(key: RunKey, held: Parent) -> str:
    return (
        f"it derives from run {shown(held.key[1])!r} of account {shown_account(held.key[0])} "
        "already, and a declaration is never changed"
    )
