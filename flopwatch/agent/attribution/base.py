"""The one interface every attribution source implements, and the attributor combining them.

A source turns what it knows about the node (a scheduler's process environment, the kubelet's
device assignments, jobs registered by hand) into job windows (flopwatch.attribution). The
attributor asks every source once per batch of readings; flopwatch.attribution.attribute then
splits each GPU interval by the windows' precedence. A source that fails (the kubelet is not
answering) is logged and skipped for that batch: its work is still counted, unattributed. So is
a window whose job id is not an identifier (`flopwatch.identifiers`): a record naming it would
be refused whole by the collector.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from flopwatch.agent.backends.base import GpuReading
from flopwatch.attribution import JobWindow
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import Precision

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


class Attributor:
    """Collects the windows of all sources for each batch of readings.

    `declared()` gives job id -> precision declared for it by hand (`flopwatch job start
    --precision`); it overrides whatever precision a source found for that job.
    """

    def __init__(
        self,
        sources: Sequence[AttributionSource],
        declared: Callable[[], Mapping[str, Precision]] = dict,
    ) -> None:
        self.sources = tuple(sources)
        self._declared = declared
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
            out.extend(w for w in named if w.end_ns is None or w.end_ns > first_ns)
        declared = self._declared()
        if not declared:
            return out
        return [
            dataclasses.replace(w, precision=declared[w.job_id]) if w.job_id in declared else w
            for w in out
        ]

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
