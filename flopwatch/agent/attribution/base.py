"""The one interface every attribution source implements, and the attributor combining them.

A source turns what it knows about the node (a scheduler's process environment, the kubelet's
device assignments, jobs registered by hand) into job windows (flopwatch.attribution). The
attributor asks every source once per batch of readings; flopwatch.attribution.attribute then
splits each GPU interval by the windows' precedence. A source that fails (the kubelet is not
answering) is logged and skipped for that batch: its work is still counted, unattributed. So is
a window whose job id is not an identifier (`flopwatch.identifiers`): a record naming it would
be refused whole by the collector. A window's run or account that fails its rule is refused
alone (flopwatch/agent/attribution/labels.py): the work stays the job's, in its own run.

Then what was registered for a job by hand or by a scheduler's hook (`Declared`: precision,
run, account, class, parent run) overrides what the sources found for it, and windows still
without an account get the node's default account.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from flopwatch.agent.attribution.labels import (
    Refusals,
    account_refusal,
    parent_refusal,
    run_refusal,
)
from flopwatch.agent.backends.base import GpuReading
from flopwatch.attribution import JobWindow
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import Precision
from flopwatch.runs import RUN_FROM_MANUAL, WorkloadClass

log = logging.getLogger(__name__)

WARN_EVERY = 60  # while a source keeps failing, log one warning per this many failures
_ID_CHARS = DEFAULT_LIMITS.max_identifier_chars


class AttributionSource(Protocol):
    """Where job windows come from."""

    name: str  # for logs and metrics: "slurm", "kubernetes", "registry", "jobs-file"

    def windows(self, pids: Collection[int], now_ns: int) -> Sequence[JobWindow]:
        """Windows covering the work of the batch ending at `now_ns` (unix ns), whose GPUs
        ran the processes `pids`. Raises FlopwatchError when the source cannot answer."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Declared:
    """What a registration (`flopwatch job start`) declares for a job; each value given
    overrides what the sources found for the job."""

    precision: Precision = Precision.UNSPECIFIED
    run: str = ""
    account: str = ""
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    run_parent: str = ""

    def apply(self, w: JobWindow) -> JobWindow:
        changes: dict[str, Any] = {}
        if self.precision is not Precision.UNSPECIFIED:
            changes["precision"] = self.precision
        if self.run:
            changes.update(run=self.run, run_source=RUN_FROM_MANUAL)
        if self.account:
            changes["account"] = self.account
        if self.workload_class is not WorkloadClass.UNKNOWN:
            changes["workload_class"] = self.workload_class
        if self.run_parent:
            changes["run_parent"] = self.run_parent
        return dataclasses.replace(w, **changes) if changes else w


class Attributor:
    """Collects the windows of all sources for each batch of readings.

    `declared()` gives job id -> what was declared for it by hand or by a hook (`flopwatch job
    start --precision --run --account --class`); it overrides what a source found for that
    job. `refusals` counts run, account and class values refused (shared with the sources);
    `default_account` is the account of windows that have none.
    """

    def __init__(
        self,
        sources: Sequence[AttributionSource],
        declared: Callable[[], Mapping[str, Declared]] = dict,
        *,
        refusals: Refusals | None = None,
        default_account: str = "",
    ) -> None:
        self.sources = tuple(sources)
        self._declared = declared
        self.refusals = refusals if refusals is not None else Refusals()
        self._default_account = default_account
        self.errors: Counter[str] = Counter()  # failures per source, since start
        self._streak: Counter[str] = Counter()

    def windows(self, readings: Sequence[GpuReading]) -> list[JobWindow]:
        if not readings:
            return []
        pids = {p.pid for r in readings for p in r.processes}
        now_ns = max(r.end_ns for r in readings)
        first_ns = min(r.start_ns for r in readings)
        out: list[JobWindow] = []
        for source in self.sources:
            try:
                found = source.windows(pids, now_ns)
            except FlopwatchError as e:
                self._failed(source.name, e)
                continue
            named = [w for w in found if identifier_problem(w.job_id, _ID_CHARS) is None]
            if len(named) < len(found):  # the collector would refuse the record they are in
                bad = next(w.job_id for w in found if w not in named)
                why = identifier_problem(bad, _ID_CHARS)
                self._failed(source.name, ConfigError(f"job id {shown(bad)!r} {why}"))
            elif self._streak.pop(source.name, 0):
                log.info("attribution source %s answers again", source.name)
            # windows that ended before the batch cannot claim any of it
            out.extend(self._checked(w) for w in named if w.end_ns is None or w.end_ns > first_ns)
        declared = self._declared()
        if declared:
            out = [declared[w.job_id].apply(w) if w.job_id in declared else w for w in out]
        if self._default_account:
            default = self._default_account
            out = [w if w.account else dataclasses.replace(w, account=default) for w in out]
        return out

    def _checked(self, w: JobWindow) -> JobWindow:
        """The window with a run, account or parent run that fails its rule taken out (and
        refused)."""
        if not (w.run or w.account or w.run_parent):
            return w
        run, run_source, account, parent = w.run, w.run_source, w.account, w.run_parent
        why = run_refusal(run, run_source) if run else None
        if why is not None:
            self.refusals.refuse("run", run, why, w.job_id, "the job's own run")
            run, run_source = "", ""
        why = account_refusal(account) if account else None
        if why is not None:
            then = "the node's default account" if self._default_account else "no account"
            self.refusals.refuse("account", account, why, w.job_id, then)
            account = ""
        why = parent_refusal(parent, run) if parent else None
        if why is not None:
            self.refusals.refuse("parent", parent, why, w.job_id, "its run, with no parent")
            parent = ""
        if (run, account, parent) == (w.run, w.account, w.run_parent):
            return w
        return dataclasses.replace(
            w, run=run, run_source=run_source, account=account, run_parent=parent
        )

    def _failed(self, name: str, error: FlopwatchError) -> None:
        self.errors[name] += 1
        self._streak[name] += 1
        if self._streak[name] % WARN_EVERY == 1:
            log.warning(
                "attribution source %s failed (%d in a row; its jobs' work is counted as "
                "unattributed meanwhile): %s",
                name,
                self._streak[name],
                error,
            )

    def close(self) -> None:
        for source in self.sources:
            source.close()
