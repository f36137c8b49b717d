"""Threshold alerts: which (job, threshold) pairs a commit crosses, and where they are sent.

`ThresholdPolicy` is pure. It fires a threshold when the job's figure on the configured basis has
reached it and the store holds no alert for that (job, threshold) yet; the store's primary key on
(job, threshold) makes each fire exactly once, ever, across restarts. Because the fired set, not
the total before the commit, decides, a threshold added to the configuration after a job passed
it still fires on the job's next commit: no crossing is missed.

Sinks receive events after the commit that recorded them. A sink failure loses that notification,
never the alert record (`Store.fired_alerts`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Protocol

from collector.store import AlertBasis, AlertEvent, JobTotal, Projection
from flopwatch.errors import ConfigError

log = logging.getLogger(__name__)

BASES: tuple[AlertBasis, ...] = ("upper", "estimate")
FIGURE_NAMES: dict[AlertBasis, str] = {"upper": "upper bound", "estimate": "estimate"}


class ThresholdPolicy:
    """FLOP thresholds and the figure they are compared with ("upper" by default: sound)."""

    def __init__(self, thresholds: Sequence[int], basis: str = "upper") -> None:
        if basis not in BASES:
            raise ConfigError(f"alert basis must be 'upper' or 'estimate', not {basis!r}")
        if any(t <= 0 for t in thresholds):
            raise ConfigError("FLOP thresholds must be positive")
        self.thresholds: tuple[int, ...] = tuple(sorted(set(thresholds)))
        self.basis: AlertBasis = "upper" if basis == "upper" else "estimate"

    def value(self, total: JobTotal) -> int:
        """The job's figure on this policy's basis."""
        return total.flops_upper if self.basis == "upper" else total.flops_estimate

    def rate(self, total: JobTotal) -> float | None:
        """FLOPs per second over the job's observed span (first start to last end)."""
        span_ns = total.last_end_ns - total.first_start_ns
        return self.value(total) * 1e9 / span_ns if span_ns > 0 else None

    def newly_crossed(
        self,
        job_id: str,
        value: int,
        fired: Collection[int],
        rate: float | None,
        at_ns: int,
    ) -> list[AlertEvent]:
        """Events for thresholds `value` has reached that are not in `fired`, ascending.

        Each event carries the projected time to the next threshold still ahead at `rate`.
        """
        crossed = [t for t in self.thresholds if t <= value and t not in fired]
        if not crossed:
            return []
        ahead = [t for t in self.thresholds if t > value]
        projection = None
        if ahead and rate is not None and rate > 0:
            projection = Projection(ahead[0], (ahead[0] - value) / rate)
        return [AlertEvent(job_id, t, self.basis, value, at_ns, projection) for t in crossed]

    def evaluate(self, total: JobTotal, at_ns: int) -> list[AlertEvent]:
        """Events a job's total (after a commit, with its fired thresholds) newly crosses."""
        return self.newly_crossed(
            total.job_id, self.value(total), total.thresholds_crossed, self.rate(total), at_ns
        )


class AlertSink(Protocol):
    """Somewhere alerts go (log, webhook, Alertmanager). Called on the ingest thread after
    the commit; a sink that does I/O should hand off and return quickly. Raise a
    `flopwatch.errors.FlopwatchError` subclass on failure."""

    def emit(self, event: AlertEvent) -> None: ...


class LogSink:
    """Logs each alert as one line with structured fields (also passed as `extra`)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def emit(self, event: AlertEvent) -> None:
        figure = FIGURE_NAMES[event.basis]
        nxt = event.projected_next
        fields = {
            "job": event.job_id,
            "threshold": event.threshold,
            "basis": event.basis,
            "figure": figure,
            "flops": event.value,
            "next_threshold": None if nxt is None else nxt.threshold,
            "next_in_s": None if nxt is None else round(nxt.seconds, 1),
        }
        self._log.warning(
            "FLOP threshold crossed: job=%s threshold=%d basis=%s figure=%r flops=%d "
            "next_threshold=%s next_in_s=%s",
            *fields.values(),
            extra=fields,
        )
