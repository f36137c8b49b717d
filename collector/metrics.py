"""Prometheus metrics of the collector, from a custom collector that yields fresh families.

Values come from `Ingestor.snapshot()`, a copy the ingest thread refreshes after each commit,
so a scrape never touches the database (whose connection belongs to the ingest thread).

FLOP totals are exact integers in the store and in ListJobs; Prometheus samples are float64, so
here they carry about 16 significant digits. Use ListJobs or a report bundle for exact figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from collector.ingest import IngestSnapshot
from flopwatch.model import MODEL_VERSION


class FlopwatchMetrics(Collector):
    """Yields the flopwatch_* families from the latest ingest snapshot on every scrape."""

    def __init__(
        self, snapshot: Callable[[], IngestSnapshot], thresholds: Sequence[int] = ()
    ) -> None:
        self._snapshot = snapshot
        self._thresholds = tuple(thresholds)

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        estimate = CounterMetricFamily(
            "flopwatch_job_flops",
            f"FLOPs estimate (FLOP model v{MODEL_VERSION}) of the job, summed over all its "
            "verified records; uses the job's declared precision, bf16 if none.",
            labels=["job"],
        )
        upper = CounterMetricFamily(
            "flopwatch_job_flops_upper",
            f"Sound upper bound on the job's FLOPs (FLOP model v{MODEL_VERSION}): fastest "
            "precision and maximum SM clock, summed over all its verified records.",
            labels=["job"],
        )
        crossed = GaugeMetricFamily(
            "flopwatch_job_threshold_crossed",
            "1 when the job's FLOP threshold alert has fired, 0 while it has not.",
            labels=["job", "threshold"],
        )
        for job in sorted(s.jobs, key=lambda j: j.job_id):
            estimate.add_metric([job.job_id], float(job.flops_estimate))
            upper.add_metric([job.job_id], float(job.flops_upper))
            for t in sorted(set(self._thresholds) | set(job.thresholds_crossed)):
                crossed.add_metric([job.job_id, str(t)], 1.0 if t in job.thresholds_crossed else 0)
        yield estimate
        yield upper
        yield crossed

        yield CounterMetricFamily(
            "flopwatch_records_accepted",
            "Records verified and committed (since this collector started).",
            value=s.accepted,
        )
        yield CounterMetricFamily(
            "flopwatch_records_duplicate",
            "Records received again that were already held; nothing changed.",
            value=s.duplicate,
        )
        yield CounterMetricFamily(
            "flopwatch_records_retry",
            "Records answered 'retry' because the store failed; the agent sends them again.",
            value=s.retry,
        )
        rejected = CounterMetricFamily(
            "flopwatch_records_rejected",
            "Records refused for good, by reason code.",
            labels=["reason"],
        )
        for reason, n in sorted(s.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected

        missing = GaugeMetricFamily(
            "flopwatch_node_missing_records",
            "Sequence numbers below a node key's highest held record that are not held.",
            labels=["key_id", "node"],
        )
        for c in sorted(s.chains, key=lambda c: c.key_id):
            missing.add_metric([c.key_id, c.node_id], c.missing)
        yield missing


def register_metrics(
    registry: CollectorRegistry,
    snapshot: Callable[[], IngestSnapshot],
    thresholds: Sequence[int] = (),
) -> FlopwatchMetrics:
    """Register the flopwatch collector on `registry` (a fresh one per collector or test)."""
    metrics = FlopwatchMetrics(snapshot, thresholds)
    registry.register(metrics)
    return metrics
