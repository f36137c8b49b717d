"""Alerts: which (job, threshold) pairs a commit crosses, node events, and where they are sent.

`ThresholdPolicy` is pure. It fires a threshold when the job's figure on the configured basis has
reached it and the store holds no alert for that (job, threshold) yet; the store's primary key on
(job, threshold) makes each fire exactly once, ever, across restarts. Because the fired set, not
the total before the commit, decides, a threshold added to the configuration after a job passed
it still fires on the job's next commit: no crossing is missed.

Five kinds of event reach the sinks: `AlertEvent` (a job crossed a FLOP threshold, after the
commit that recorded it), `ScopeAlert` (a run or an account window crossed a threshold, or a run
will at its current rate within the forecast horizon; `flopwatch.collector.alerts.scopes`),
`NodeSilent` (an enrolled key sent nothing for longer than the configured timeout, once per
silence episode; `flopwatch.collector.alerts.liveness`), `ChainFork` (a key signed two different
records for one place in its chain; `flopwatch.collector.ingest.ingestor`) and `ClockAhead` (a
key's records end beyond the collector's clock plus the allowed skew, once per episode;
`flopwatch.collector.alerts.clocks`). A sink failure loses that notification, never the alert
record (`Store.fired_alerts`, `Store.fired_scope_alerts`).

`describe` turns any event into one flat JSON-ready dict (FLOP figures as exact decimal
strings, each named for what it is); the log line and the webhook body are both made from it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from flopwatch.collector.alerts.clocks import ClockAhead
from flopwatch.collector.store.records import (
    AlertBasis,
    AlertEvent,
    JobTotal,
    Projection,
    ScopeAlert,
)
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.keys import short_key_id
from flopwatch.model import MODEL_VERSION
from flopwatch.runs import shown_account

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


@dataclass(frozen=True)
class NodeSilent:
    """An enrolled node key has committed no record for longer than `silent_after_s`."""

    key_id: str
    node_id: str
    since_ns: int  # its last record (collector clock), or its enrollment if it never sent
    never_sent: bool
    silent_after_s: float
    at_ns: int


@dataclass(frozen=True)
class ChainFork:
    """A key signed a record that conflicts with one already held at that place in its chain."""

    key_id: str
    node_id: str
    sequence: int
    detail: str
    at_ns: int


Event = AlertEvent | ScopeAlert | NodeSilent | ChainFork | ClockAhead


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="seconds")


def scope_name(event: ScopeAlert) -> str:
    """'run ACCOUNT/RUN' or 'account ACCOUNT over the last N days', for people."""
    account = shown_account(event.account)
    if event.scope == "run":
        return f"run {event.run} (account {account})"
    return f"account {account} over the last {event.window_days} days"


_SCOPE_KINDS = {
    "crossed": "threshold_crossed",
    "forecast": "threshold_forecast",
    "derived": "derived_over_third",
}


def describe_scope_alert(event: ScopeAlert) -> dict[str, object]:
    """A run or account alert: its scope, figure, rule and threshold, and for a forecast the
    rate and when the threshold is expected."""
    figure = FIGURE_NAMES[event.basis]
    rule = event.rule
    what = scope_name(event)
    if event.kind == "crossed":
        summary = (
            f"{what}: FLOPs {figure} {event.value:.4e} reached the {rule.threshold:.0e} FLOP "
            f"threshold ({rule.name}: {rule.meaning})"
        )
    elif event.kind == "derived":
        parent = "" if event.parent_value is None else f" ({event.parent_value:.4e})"
        summary = (
            f"{what}: its own FLOPs {figure} {event.value:.4e} are above a third of its "
            f"parent's cumulative compute{parent} ({rule.name}: {rule.meaning})"
        )
    else:
        eta_s = event.eta_s or 0.0
        when = f"{eta_s / 86400:.1f} days" if eta_s >= 86400 else f"{eta_s / 3600:.2f} hours"
        summary = (
            f"{what}: at its current rate ({event.rate or 0.0:.3e} FLOP/s) the FLOPs {figure}, "
            f"now {event.value:.4e}, reaches the {rule.threshold:.0e} FLOP threshold "
            f"({rule.name}: {rule.meaning}) in about {when}"
        )
    eta = event.eta_s
    return {
        "kind": _SCOPE_KINDS[event.kind],
        "scope": event.scope,
        "account": event.account,
        "run": event.run if event.scope == "run" else None,
        "window_days": event.window_days if event.scope == "account" else None,
        "rule": rule.name,
        "rule_meaning": rule.meaning,
        "rule_source": rule.source,
        "threshold_flops": str(rule.threshold),
        "basis": event.basis,
        "figure": figure,
        "flops": str(event.value),
        "flop_model_version": MODEL_VERSION,
        "at": _iso(event.at_ns),
        "rate_flops_per_second": event.rate,
        "expected_in_seconds": None if eta is None else round(eta, 1),
        "expected_at": None if eta is None else _iso(event.at_ns + int(eta * 1e9)),
        "parent_cumulative_flops": None if event.parent_value is None else str(event.parent_value),
        "summary": summary,
    }


def describe(event: Event) -> dict[str, object]:
    """A flat JSON-ready description: `kind`, the facts, and a `summary` for people."""
    if isinstance(event, ScopeAlert):
        return describe_scope_alert(event)
    if isinstance(event, AlertEvent):
        figure = FIGURE_NAMES[event.basis]
        nxt = event.projected_next
        summary = (
            f"job {event.job_id}: FLOPs {figure} {event.value:.4e} reached the "
            f"{event.threshold:.0e} FLOP threshold"
        )
        if nxt is not None:
            summary += (
                f"; at the job's average rate so far the next threshold, {nxt.threshold:.0e} "
                f"FLOPs, is reached in about {nxt.seconds / 3600:.1f} h"
            )
        return {
            "kind": "threshold_crossed",
            "job": event.job_id,
            "threshold_flops": str(event.threshold),
            "basis": event.basis,
            "figure": figure,
            "flops": str(event.value),
            "flop_model_version": MODEL_VERSION,
            "at": _iso(event.at_ns),
            "next_threshold_flops": None if nxt is None else str(nxt.threshold),
            "next_in_seconds": None if nxt is None else round(nxt.seconds, 1),
            "next_at": None if nxt is None else _iso(event.at_ns + int(nxt.seconds * 1e9)),
            "summary": summary,
        }
    if isinstance(event, NodeSilent):
        silent_s = (event.at_ns - event.since_ns) / 1e9
        what = "enrolled and has sent nothing" if event.never_sent else "sent its last record"
        return {
            "kind": "node_silent",
            "key_id": event.key_id,
            "node": event.node_id,
            "last_record_at": None if event.never_sent else _iso(event.since_ns),
            "silent_seconds": round(silent_s, 1),
            "silent_after_seconds": event.silent_after_s,
            "at": _iso(event.at_ns),
            "summary": f"node {event.node_id} (key {short_key_id(event.key_id)}) {what} "
            f"{silent_s:.0f} s ago (alerting after {event.silent_after_s:g} s)",
        }
    if isinstance(event, ClockAhead):
        return {
            "kind": "clock_ahead",
            "key_id": event.key_id,
            "node": event.node_id,
            "ahead_seconds": round(event.ahead_s, 1),
            "allowed_skew_seconds": event.allowed_s,
            "at": _iso(event.at_ns),
            "summary": f"node {event.node_id} (key {short_key_id(event.key_id)}) signs time "
            f"{event.ahead_s:.0f} s ahead of the collector's clock (allowed: "
            f"{event.allowed_s:g} s); its records are answered retry and wait in its spool "
            "until its clock is corrected (NTP) or their time comes",
        }
    return {
        "kind": "chain_fork",
        "key_id": event.key_id,
        "node": event.node_id,
        "sequence": event.sequence,
        "detail": event.detail,
        "at": _iso(event.at_ns),
        "summary": f"node {event.node_id} (key {short_key_id(event.key_id)}) signed a second, "
        f"different record #{event.sequence}: {event.detail}",
    }


class AlertSink(Protocol):
    """Somewhere alerts go (log, webhook). Called on the collector's ingest thread; a sink that
    does I/O must hand off and return quickly. Raise a `flopwatch.errors.FlopwatchError`
    subclass on failure."""

    def emit(self, event: Event) -> None: ...


def notify(sinks: Sequence[AlertSink], events: Sequence[Event]) -> None:
    """Hand every event to every sink; a failing sink loses only its own notification."""
    for event in events:
        for sink in sinks:
            try:
                sink.emit(event)
            except FlopwatchError:
                log.exception("alert sink %s failed for a %s event", sink, type(event).__name__)


class LogSink:
    """Logs each event as one WARNING line with structured fields (also passed as `extra`)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def emit(self, event: Event) -> None:
        if not isinstance(event, AlertEvent):
            about = describe(event)
            title = {
                NodeSilent: "node silent",
                ChainFork: "chain fork",
                ScopeAlert: "FLOP threshold",
            }.get(type(event), "node clock ahead")
            self._log.warning("%s: %s", title, about["summary"], extra={**about, "fields": about})
            return
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
            extra={**fields, "fields": describe(event)},
        )
