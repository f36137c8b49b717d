"""Prometheus metrics of the monitor: per log its kept size, position, entries counted and
problems by reason; totals per run, account and entity (the largest `max_metric_totals` per
kind, by upper bound; jobs are left out: too many series); the rolling windows per account and
entity (the same bound, by the longest window's upper bound); alerts fired.

A custom collector yields fresh families from a snapshot per scrape. FLOP totals are floats here
(Prometheus's type); the exact figures are in the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from flopwatch.monitor.follower import LogStats
from flopwatch.monitor.totals import Figures, TotalKey


@dataclass
class Snapshot:
    logs: Mapping[str, LogStats] = field(default_factory=dict)
    totals: Mapping[TotalKey, Figures] = field(default_factory=dict)
    alerts_fired: int = 0
    webhook_failed: int = 0
    # Rolling windows per account and entity: (kind, key) -> figures per `window_days`.
    windows: Mapping[TotalKey, tuple[Figures, ...]] = field(default_factory=dict)
    window_days: tuple[int, ...] = ()


class MonitorMetrics(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], max_totals: int) -> None:
        self._snapshot = snapshot
        self._max_totals = max_totals

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        size = GaugeMetricFamily(
            "flopwatch_monitor_log_size", "Size of the checkpoint kept per log", labels=["log"]
        )
        position = GaugeMetricFamily(
            "flopwatch_monitor_log_position", "Entries of the log counted or judged", labels=["log"]
        )
        entries = CounterMetricFamily(
            "flopwatch_monitor_entries",
            "Entries by outcome since the monitor started (counted, duplicate, failed)",
            labels=["log", "outcome"],
        )
        intervals = CounterMetricFamily(
            "flopwatch_monitor_gpu_intervals", "GPU intervals counted since start", labels=["log"]
        )
        problems = CounterMetricFamily(
            "flopwatch_monitor_problems",
            "Problems recorded since start, by reason (log_unreachable: failed polls)",
            labels=["log", "reason"],
        )
        for name, st in sorted(s.logs.items()):
            size.add_metric([name], st.kept_size)
            position.add_metric([name], st.position)
            for outcome, n in (
                ("counted", st.counted),
                ("duplicate", st.duplicates),
                ("failed", st.failed),
            ):
                entries.add_metric([name, outcome], n)
            intervals.add_metric([name], st.gpu_intervals)
            for reason, n in sorted(st.problems.items()):
                problems.add_metric([name, reason], n)
        yield from (size, position, entries, intervals, problems)
        flops = GaugeMetricFamily(
            "flopwatch_monitor_total_flops",
            "FLOPs per run, account and entity across every followed log",
            labels=["kind", "key", "figure"],
        )
        for kind in ("run", "account", "entity"):
            rows = [(k, f) for (kd, k), f in s.totals.items() if kd == kind]
            rows.sort(key=lambda r: -r[1].flops_upper)
            for key, f in rows[: self._max_totals]:
                flops.add_metric([kind, key, "estimate"], float(f.flops_estimate))
                flops.add_metric([kind, key, "upper"], float(f.flops_upper))
        yield flops
        windowed = GaugeMetricFamily(
            "flopwatch_monitor_window_flops",
            "FLOPs per account and entity over its last DAYS UTC days (each record's own time)",
            labels=["kind", "key", "days", "figure"],
        )
        for kind in ("account", "entity"):
            wrows = [(k, w) for (kd, k), w in s.windows.items() if kd == kind and w]
            wrows.sort(key=lambda r: -r[1][-1].flops_upper)  # by the longest window
            for key, figures in wrows[: self._max_totals]:
                for n, f in zip(s.window_days, figures, strict=True):
                    windowed.add_metric([kind, key, str(n), "estimate"], float(f.flops_estimate))
                    windowed.add_metric([kind, key, str(n), "upper"], float(f.flops_upper))
        yield windowed
        yield CounterMetricFamily(
            "flopwatch_monitor_alerts", "Threshold alerts fired since start", value=s.alerts_fired
        )
        yield CounterMetricFamily(
            "flopwatch_monitor_webhook_failed",
            "Notifications the webhook gave up on since start",
            value=s.webhook_failed,
        )


def register(
    registry: CollectorRegistry, snapshot: Callable[[], Snapshot], max_totals: int
) -> MonitorMetrics:
    metrics = MonitorMetrics(snapshot, max_totals)
    registry.register(metrics)
    return metrics
