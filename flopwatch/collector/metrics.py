"""Prometheus metrics of the collector, from a custom collector that yields fresh families.

Values come from `Ingestor.snapshot()`, a copy the ingest thread refreshes after each commit,
and from `LivenessMonitor.snapshot()`, refreshed by every liveness check, so a scrape never
touches the database (whose connection belongs to the ingest thread); the other counters
(streams, rejections, enrollment, role refusals) are copied under their own locks. Label values
clients choose (peers, node ids a record claims) are bounded by `ServerLimits.max_label_values`.

Series per job, run and account are bounded (`MetricsSeries`): only those active within
`recent_s` of now (their latest measured interval ended since), at most `max_series` of each
kind, the most recently active first. Per-GPU series carry dcgm-exporter's label names too
(`Hostname`, `UUID`) so PromQL joins with GPU dashboards work; runs carry `account`, `run` and
`class` (the classes its records declared, joined with "+").

FLOP totals are exact integers in the store and in ListJobs; Prometheus samples are float64, so
here they carry about 16 significant digits. Use ListJobs or a report bundle for exact figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from flopwatch.collector.alerts.liveness import NodeLiveness
from flopwatch.collector.config import MetricsSeries
from flopwatch.collector.enrollment import EnrollmentStats
from flopwatch.collector.ingest.declared_parents import REASONS
from flopwatch.collector.ingest.ingestor import IngestSnapshot
from flopwatch.collector.ingest.rejections import RejectionCounts
from flopwatch.collector.rpc.ingest import StreamStats
from flopwatch.model import MODEL_VERSION
from flopwatch.runs import classes_in
from flopwatch.webhook_delivery import WebhookStats


class _Active(Protocol):
    @property
    def last_end_ns(self) -> int: ...


_T = TypeVar("_T", bound=_Active)
_P = ParamSpec("_P")

_FS_PER_S = 10**15
_NJ_PER_J = 10**9


def recent(items: Iterable[_T], series: MetricsSeries, now_ns: int) -> list[_T]:
    """The items active within `series.recent_s` of `now_ns`, at most `series.max_series`, the
    most recently active kept."""
    since = now_ns - int(series.recent_s * 1e9)
    active = [i for i in items if i.last_end_ns >= since]
    if len(active) > series.max_series:
        active.sort(key=lambda i: i.last_end_ns, reverse=True)
        del active[series.max_series :]
    return active


def _class_label(bits: int) -> str:
    return "+".join(c.value for c in classes_in(bits)) or "unknown"


class FlopwatchMetrics(Collector):
    """Yields the flopwatch_* families from the latest snapshots on every scrape."""

    def __init__(
        self,
        snapshot: Callable[[], IngestSnapshot],
        thresholds: Sequence[int] = (),
        *,
        liveness: Callable[[], Sequence[NodeLiveness]] | None = None,
        webhook: Callable[[], WebhookStats] | None = None,
        streams: Callable[[], StreamStats] | None = None,
        rejections: Callable[[], RejectionCounts] | None = None,
        connections: Callable[[], tuple[int, int]] | None = None,
        enrollment: Callable[[], EnrollmentStats] | None = None,
        roles: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]] | None = None,
        series: MetricsSeries | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._snapshot = snapshot
        self._series = series or MetricsSeries()
        self._now_ns = now_ns
        self._enrollment = enrollment
        self._roles = roles
        self._thresholds = tuple(thresholds)
        self._liveness = liveness
        self._webhook = webhook
        self._streams = streams
        self._rejections = rejections
        self._connections = connections

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        now = self._now_ns()
        estimate = CounterMetricFamily(
            "flopwatch_job_flops",
            f"FLOPs estimate (FLOP model v{MODEL_VERSION}) of the job, summed over all its "
            "verified records; uses the job's declared precision, bf16 if none.",
            labels=["job_id"],
        )
        upper = CounterMetricFamily(
            "flopwatch_job_flops_upper",
            f"Sound upper bound on the job's FLOPs (FLOP model v{MODEL_VERSION}): fastest "
            "precision and maximum SM clock, summed over all its verified records.",
            labels=["job_id"],
        )
        crossed = GaugeMetricFamily(
            "flopwatch_job_threshold_crossed",
            "1 when the job's FLOP threshold alert has fired, 0 while it has not.",
            labels=["job_id", "threshold"],
        )
        for job in sorted(recent(s.jobs, self._series, now), key=lambda j: j.job_id):
            estimate.add_metric([job.job_id], float(job.flops_estimate))
            upper.add_metric([job.job_id], float(job.flops_upper))
            for t in sorted(set(self._thresholds) | set(job.thresholds_crossed)):
                crossed.add_metric([job.job_id, str(t)], 1.0 if t in job.thresholds_crossed else 0)
        yield estimate
        yield upper
        yield crossed
        yield from self._runs(s, now)
        yield from self._accounts(s, now)

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
            "Records answered 'retry' (store unavailable, or signed by a key awaiting approval); "
            "the agent sends them again.",
            value=s.retry,
        )
        yield CounterMetricFamily(
            "flopwatch_records_verified_ahead",
            "Records a verify worker process checked (signature, recomputed FLOPs) before the "
            "ingest thread judged them (--verify-workers); the rest it verified itself.",
            value=s.verified_ahead,
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

        forks = CounterMetricFamily(
            "flopwatch_chain_forks",
            "Records refused because the key had signed a different record for the same place "
            "in its chain (since this collector started); 0 for every key with records.",
            labels=["key_id", "node"],
        )
        counts = {(c.key_id, c.node_id): 0 for c in s.chains} | dict(s.forks)
        for (key_id, node), n in sorted(counts.items()):
            forks.add_metric([key_id, node], n)
        yield forks
        yield from self._clocks(s)
        yield from self._gpus(s)
        yield from self._nodes()
        yield from self._alerting()
        yield self._scope_alerts(s)
        yield from self._lineage(s)
        yield from self._rejected_by_source()
        yield from self._limits()
        yield from self._trust()

    def _runs(self, s: IngestSnapshot, now: int) -> Iterator[Metric]:
        labels = ["account", "run", "class"]
        what = "run (its account and name), over all its jobs, nodes and clusters"
        fams = _totals_families("run", what, labels)
        for r in sorted(recent(s.runs, self._series, now), key=lambda r: (r.account, r.run)):
            values = [r.account, r.run, _class_label(r.classes)]
            _add_totals(fams, values, r)
        yield from fams

    def _accounts(self, s: IngestSnapshot, now: int) -> Iterator[Metric]:
        fams = _totals_families("account", "account, all its runs together", ["account"])
        win = [
            GaugeMetricFamily(
                f"flopwatch_account_window_{name}",
                f"{text} of the account over its trailing window of UTC days (label window, "
                "e.g. 30d), as of the account's last commit (a window moves on at a UTC day "
                "boundary when the account commits again; `flopwatch accounts` is exact).",
                labels=["account", "window"],
            )
            for name, text in _TOTALS
        ]
        shown = recent((a.total for a in s.accounts), self._series, now)
        views = {a.total.account: a for a in s.accounts}
        for t in sorted(shown, key=lambda t: t.account):
            _add_totals(fams, [t.account], t)
            for w in views[t.account].windows:
                _add_totals(win, [t.account, f"{w.days}d"], w)
        yield from fams
        yield from win

    def _trust(self) -> Iterator[Metric]:
        """Keys awaiting approval that could not be noted, enrollment tokens, calls refused
        for want of a client role."""
        if self._enrollment is not None:
            e = self._enrollment()
            refused = CounterMetricFamily(
                "flopwatch_pending_key_records_refused",
                "Records signed by a key not enrolled that presented itself, answered retry "
                "without noting the key as awaiting approval because keys pending were at a "
                "limit (--max-pending-keys, --max-pending-keys-per-node, "
                "--max-new-pending-keys-per-minute); by the node id the record claims, past "
                "max_label_values node ids 'other'.",
                labels=["node"],
            )
            for node, n in sorted(e.pending_refused_by_node.items()):
                refused.add_metric([node], n)
            yield refused
            tokens = CounterMetricFamily(
                "flopwatch_enrollment_tokens",
                "Enrollment tokens presented by agents: enrolled (a new key enrolled) or refused "
                "(unknown, spent, expired, or for a key revoked or enrolled elsewhere).",
                labels=["result"],
            )
            tokens.add_metric(["enrolled"], e.token_enrolled)
            tokens.add_metric(["refused"], e.token_refused)
            yield tokens
        if self._roles is not None:
            by_method, by_peer = self._roles()
            method = CounterMetricFamily(
                "flopwatch_role_denied_calls",
                "Calls refused PERMISSION_DENIED because the client certificate lacks the role "
                "the method needs (agent, reader), by method.",
                labels=["method"],
            )
            for name, n in sorted(by_method.items()):
                method.add_metric([name], n)
            yield method
            peer = CounterMetricFamily(
                "flopwatch_peer_role_denied_calls",
                "The same, by the client (address and certificate fingerprint); past "
                "max_label_values peers, 'other'.",
                labels=["peer"],
            )
            for name, n in sorted(by_peer.items()):
                peer.add_metric([name], n)
            yield peer

    def _rejected_by_source(self) -> Iterator[Metric]:
        if self._rejections is None:
            return
        r = self._rejections()
        node = CounterMetricFamily(
            "flopwatch_node_records_rejected",
            "Records refused, by the node their signing key is enrolled for and reason (keys "
            "nobody enrolled count only per peer); past max_label_values nodes, 'other'.",
            labels=["node", "reason"],
        )
        for (name, reason), n in sorted(r.by_node.items()):
            node.add_metric([name, reason], n)
        yield node
        peer = CounterMetricFamily(
            "flopwatch_peer_records_rejected",
            "Records refused, by the client that sent them (address, and certificate "
            "fingerprint under mTLS) and reason; past max_label_values peers, 'other'.",
            labels=["peer", "reason"],
        )
        for (name, reason), n in sorted(r.by_peer.items()):
            peer.add_metric([name, reason], n)
        yield peer
        yield CounterMetricFamily(
            "flopwatch_rejection_log_lines",
            "Log lines written about rejected records (one per peer per period at most).",
            value=r.log_lines,
        )

    def _limits(self) -> Iterator[Metric]:
        if self._streams is not None:
            st = self._streams()
            yield GaugeMetricFamily(
                "flopwatch_submit_streams", "Submit streams open now.", value=st.open_streams
            )
            refused = CounterMetricFamily(
                "flopwatch_submit_streams_refused",
                "Submit streams refused RESOURCE_EXHAUSTED, by the cap that refused them.",
                labels=["cap"],
            )
            for cap in ("max_streams_per_address", "max_streams_per_certificate"):
                refused.add_metric([cap], st.refused.get(cap, 0))
            yield refused
            yield CounterMetricFamily(
                "flopwatch_submit_streams_idle_closed",
                "Submit streams ended for sending nothing for stream_idle_timeout_s.",
                value=st.idle_closed,
            )
            yield GaugeMetricFamily(
                "flopwatch_inflight_bytes",
                "Bytes of envelopes read and not yet acked (bounded by max_inflight_bytes).",
                value=st.inflight_bytes,
            )
            yield GaugeMetricFamily(
                "flopwatch_inflight_bytes_peak",
                "The most bytes of envelopes ever held between read and ack at once.",
                value=st.inflight_bytes_peak,
            )
            yield CounterMetricFamily(
                "flopwatch_inflight_budget_waits",
                "Envelopes whose stream waited for room in the byte budget (its own peer's "
                "share, or the whole) before reading on.",
                value=st.budget_waits,
            )
            yield GaugeMetricFamily(
                "flopwatch_ingest_queued",
                "Envelopes waiting for an ingest batch.",
                value=st.queued,
            )
        if self._connections is not None:
            accepted, used = self._connections()
            yield CounterMetricFamily(
                "flopwatch_tls_connections",
                "TLS connections accepted on the mTLS port (each one handshake begun).",
                value=accepted,
            )
            yield CounterMetricFamily(
                "flopwatch_tls_connections_used",
                "TLS connections that carried at least one call. Accepted minus used: "
                "handshakes refused (a client certificate from another CA, or none), connection "
                "cap or handshake timeout, probes.",
                value=used,
            )

    @staticmethod
    def _clocks(s: IngestSnapshot) -> Iterator[Metric]:
        future = CounterMetricFamily(
            "flopwatch_records_future",
            "Records answered retry because their time ends after the collector's clock plus "
            "the allowed skew (the node's clock runs ahead; since this collector started); 0 "
            "for every key with records.",
            labels=["key_id", "node"],
        )
        counts = {(c.key_id, c.node_id): 0 for c in s.chains} | dict(s.future)
        for (key_id, node), n in sorted(counts.items()):
            future.add_metric([key_id, node], n)
        yield future
        ahead = GaugeMetricFamily(
            "flopwatch_node_clock_ahead_seconds",
            "How far after the collector's clock the latest record of a node key ends, while "
            "its records are answered retry for it (the key is unhealthy); 0 once a record of "
            "the key is accepted again.",
            labels=["key_id", "node"],
        )
        seconds = {(c.key_id, c.node_id): 0.0 for c in s.chains} | dict(s.clock_ahead)
        for (key_id, node), value in sorted(seconds.items()):
            ahead.add_metric([key_id, node], value)
        yield ahead

    def _gpus(self, s: IngestSnapshot) -> Iterator[Metric]:
        estimate = CounterMetricFamily(
            "flopwatch_gpu_flops",
            f"FLOPs estimate (FLOP model v{MODEL_VERSION}) measured on the GPU (or MIG "
            "instance), summed over all its verified intervals and all jobs.",
            labels=["node", "gpu", "Hostname", "UUID"],
        )
        upper = CounterMetricFamily(
            "flopwatch_gpu_flops_upper",
            f"Sound upper bound on the FLOPs (FLOP model v{MODEL_VERSION}) the GPU (or MIG "
            "instance) performed: fastest precision and maximum SM clock, over all its verified "
            "intervals; each interval counted once however many jobs shared it.",
            labels=["node", "gpu", "Hostname", "UUID"],
        )
        sums: dict[tuple[str, str], tuple[int, int]] = {}
        for g in s.gpus:  # a node re-keyed has several keys: its GPU sums add up
            e, u = sums.get((g.node_id, g.gpu), (0, 0))
            sums[(g.node_id, g.gpu)] = (e + g.flops_estimate, u + g.flops_upper)
        for (node, gpu), (e, u) in sorted(sums.items()):
            values = [node, gpu, node, gpu.partition("/")[0]]  # dcgm-exporter's names too
            estimate.add_metric(values, float(e))
            upper.add_metric(values, float(u))
        yield estimate
        yield upper

    def _nodes(self) -> Iterator[Metric]:
        if self._liveness is None:
            return
        last = GaugeMetricFamily(
            "flopwatch_node_last_record_timestamp_seconds",
            "Unix time (collector clock) a record of this enrolled node key was last "
            "committed; absent until its first record.",
            labels=["key_id", "node"],
        )
        silent = GaugeMetricFamily(
            "flopwatch_node_silent",
            "1 when this enrolled node key has sent no record for longer than --silent-after "
            "(as of the latest liveness check), 0 otherwise.",
            labels=["key_id", "node"],
        )
        for n in sorted(self._liveness(), key=lambda n: n.key_id):
            if n.last_record_ns is not None:
                last.add_metric([n.key_id, n.node_id], n.last_record_ns / 1e9)
            silent.add_metric([n.key_id, n.node_id], 1.0 if n.silent else 0.0)
        yield last
        yield silent

    @staticmethod
    def _lineage(s: IngestSnapshot) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "flopwatch_workload_lineage_declared",
            "Runs this collector declared derived from the parent run their records name "
            "(signed, logged; since it started).",
            value=s.lineage_declared,
        )
        refused = CounterMetricFamily(
            "flopwatch_workload_lineage_refused",
            "Parent runs named by records and not declared, by reason (unknown_parent, self, "
            "cycle, too_deep, invalid, other_parent), each (run, parent) once; the reason is in "
            "the log, and the records' compute is counted regardless (since it started).",
            labels=["reason"],
        )
        for reason in REASONS:
            refused.add_metric([reason], s.lineage_refused.get(reason, 0))
        yield refused

    @staticmethod
    def _scope_alerts(s: IngestSnapshot) -> Metric:
        fired = GaugeMetricFamily(
            "flopwatch_scope_alerts",
            "Run and account threshold alerts recorded in the store (kept across restarts), by "
            "scope (run, account), kind (crossed, forecast, derived), rule (eu-ai-act, us-ca-sb53, "
            "custom) and threshold; each (run or account window, kind, threshold) fires once.",
            labels=["scope", "kind", "rule", "threshold"],
        )
        for (scope, kind, rule, threshold), n in sorted(s.scope_alerts.items()):
            fired.add_metric([scope, kind, rule, str(threshold)], float(n))
        return fired

    def _alerting(self) -> Iterator[Metric]:
        thresholds = GaugeMetricFamily(
            "flopwatch_alert_threshold_flops",
            "A configured FLOP threshold (value = the threshold in FLOPs): a job's alert fires "
            "once when its total reaches it.",
            labels=["threshold"],
        )
        for t in sorted(set(self._thresholds)):
            thresholds.add_metric([str(t)], float(t))
        yield thresholds
        if self._webhook is None:
            return
        w = self._webhook()
        sent = CounterMetricFamily(
            "flopwatch_alert_notifications",
            "Alert notifications by sink and outcome: delivered; failed (retries exhausted or "
            "refused by the receiver); dropped (queue full or shutdown). Alerts stay recorded.",
            labels=["sink", "result"],
        )
        for result, n in (("delivered", w.delivered), ("failed", w.failed), ("dropped", w.dropped)):
            sent.add_metric(["webhook", result], n)
        yield sent
        retries = CounterMetricFamily(
            "flopwatch_alert_notification_retries",
            "Webhook posts tried again after a failed attempt.",
            labels=["sink"],
        )
        retries.add_metric(["webhook"], w.retries)
        yield retries


_TOTALS = (
    ("flops", f"FLOPs estimate (FLOP model v{MODEL_VERSION})"),
    ("flops_upper", f"Sound upper bound on the FLOPs (FLOP model v{MODEL_VERSION})"),
    ("gpu_seconds", "GPU time in seconds, by the jobs' shares like FLOPs"),
    (
        "energy_joules",
        "GPU board energy in joules (not host, network or cooling), by the jobs' shares like FLOPs",
    ),
)


def _totals_families(kind: str, what: str, labels: list[str]) -> list[CounterMetricFamily]:
    return [
        CounterMetricFamily(f"flopwatch_{kind}_{name}", f"{text} of the {what}.", labels=labels)
        for name, text in _TOTALS
    ]


class _Figures(Protocol):
    @property
    def flops_estimate(self) -> int: ...
    @property
    def flops_upper(self) -> int: ...
    @property
    def gpu_time_fs(self) -> int: ...
    @property
    def energy_nj(self) -> int: ...


def _add_totals(
    fams: Sequence[CounterMetricFamily | GaugeMetricFamily], values: list[str], t: _Figures
) -> None:
    fams[0].add_metric(values, float(t.flops_estimate))
    fams[1].add_metric(values, float(t.flops_upper))
    fams[2].add_metric(values, t.gpu_time_fs / _FS_PER_S)
    fams[3].add_metric(values, t.energy_nj / _NJ_PER_J)


def _registering(
    make: Callable[_P, FlopwatchMetrics],
) -> Callable[Concatenate[CollectorRegistry, _P], FlopwatchMetrics]:
    """`make`, taking the registry to register what it makes on first (its other parameters
    are `make`'s own, not repeated here)."""

    def register(
        registry: CollectorRegistry, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> FlopwatchMetrics:
        metrics = make(*args, **kwargs)
        registry.register(metrics)
        return metrics

    return register


# Register the flopwatch collector's families on `registry` (a fresh one per collector or
# test): `register_metrics(registry, snapshot, thresholds, liveness=..., ...)`, the parameters
# of `FlopwatchMetrics`.
register_metrics = _registering(FlopwatchMetrics)
