"""The agent's own Prometheus metrics, from a custom collector that yields fresh families.

What the node measured in its last interval per GPU (FLOP rate, pipe activity), how far delivery
lags (spool depth, last acknowledgement) and what went wrong (sampling errors, gaps, attribution
failures). Served on `--metrics-listen` (default 127.0.0.1:9465, loopback only). These are for
watching a node; the attested totals are the collector's (flopwatch/collector/metrics.py).

`AgentStats` is filled by the sampling thread from each record it signs; a scrape reads a
snapshot, never the GPUs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

import flopwatch
from flopwatch.agent.attribution.kubemeta import KubeStatus
from flopwatch.agent.attribution.labels import FIELDS
from flopwatch.agent.backends.base import GpuReading
from flopwatch.errors import ConfigError
from flopwatch.model import MODEL_VERSION, Pipe
from flopwatch.transport import host_port
from flopwatch.v1 import attestation_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuRate:
    """One GPU's last measured interval."""

    uuid: str
    index: int
    name: str
    method: str  # "gpm", "nvml_utilization" or "unknown_rate"
    interval_s: float
    end_unix_s: float
    flops_estimate: int  # FLOPs over the interval
    flops_upper: int
    pipe_active: Mapping[str, float]  # pipe -> fraction of elapsed SM-cycles it was busy

    @property
    def rate_estimate(self) -> float:
        return self.flops_estimate / self.interval_s

    @property
    def rate_upper(self) -> float:
        return self.flops_upper / self.interval_s


@dataclass(frozen=True)
class AgentSnapshot:
    node_id: str
    cluster: str
    gpus: Sequence[GpuRate] = ()
    records_signed: int = 0
    sampling_errors: int = 0
    gaps: Mapping[str, int] = field(default_factory=dict)  # reason -> gaps signed
    spool_records: int = 0
    spool_bytes: int = 0
    records_acked: int = 0
    records_rejected: int = 0
    last_ack_unix_s: float | None = None
    attribution_errors: Mapping[str, int] = field(default_factory=dict)  # source -> failures
    # run/account/class/parent -> count
    labels_refused: Mapping[str, int] = field(default_factory=dict)
    kubernetes: KubeStatus | None = None  # the Kubernetes API side; None: not asked


def _reason(code: int) -> str:
    name = pb.GapReason.Name(code) if code in pb.GapReason.values() else "GAP_REASON_UNKNOWN"
    return name.removeprefix("GAP_REASON_").lower()


def _method(code: int) -> str:
    name = pb.Method.Name(code) if code in pb.Method.values() else "METHOD_UNKNOWN"
    return name.removeprefix("METHOD_").lower()


class AgentStats:
    """Running totals of what the agent signed; `observe` each record. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gpus: dict[str, GpuRate] = {}
        self._signed = 0
        self._errors = 0
        self._gaps: Counter[str] = Counter()

    def observe(self, readings: Sequence[GpuReading], att: pb.Attestation) -> None:
        latest: dict[str, GpuRate] = {}
        for iv in sorted(att.intervals, key=lambda i: i.end_unix_ns):
            gpu = att.gpus[iv.gpu]
            elapsed = iv.elapsed_sm_cycles
            active = {p.value: getattr(iv.active_sm_cycles, p.value) for p in Pipe}
            latest[gpu.uuid] = GpuRate(
                uuid=gpu.uuid,
                index=gpu.index,
                name=gpu.name,
                method=_method(iv.method),
                interval_s=(iv.end_unix_ns - iv.start_unix_ns) / 1e9,
                end_unix_s=iv.end_unix_ns / 1e9,
                flops_estimate=iv.flops_estimate,
                flops_upper=iv.flops_upper,
                pipe_active={p: (c / elapsed if elapsed else 0.0) for p, c in active.items()},
            )
        with self._lock:
            self._gpus.update(latest)
            self._signed += 1
            self._errors += sum(1 for r in readings if r.error is not None)
            self._gaps.update(_reason(g.reason) for g in att.gaps)

    def snapshot(self, node_id: str, cluster: str) -> AgentSnapshot:
        with self._lock:
            return AgentSnapshot(
                node_id=node_id,
                cluster=cluster,
                gpus=tuple(self._gpus[u] for u in sorted(self._gpus)),
                records_signed=self._signed,
                sampling_errors=self._errors,
                gaps=dict(self._gaps),
            )


class AgentMetrics(Collector):
    """Yields the flopwatch_agent_* families from a fresh snapshot on every scrape."""

    def __init__(self, snapshot: Callable[[], AgentSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        info = GaugeMetricFamily(
            "flopwatch_agent_info",
            "Always 1: the node and cluster this agent signs records for, and its version.",
            labels=["node", "cluster", "version"],
        )
        info.add_metric([s.node_id, s.cluster, flopwatch.__version__], 1)
        yield info
        yield from self._gpu_families(s)
        yield GaugeMetricFamily(
            "flopwatch_agent_spool_records",
            "Signed records in the local spool not yet acknowledged by the collector.",
            value=s.spool_records,
        )
        yield GaugeMetricFamily(
            "flopwatch_agent_spool_bytes",
            "Bytes the spool's segments take on disk (unacknowledged records and the newest "
            "segment).",
            value=s.spool_bytes,
        )
        if s.last_ack_unix_s is not None:
            yield GaugeMetricFamily(
                "flopwatch_agent_last_ack_timestamp_seconds",
                "Unix time when the collector last acknowledged records (a successful send).",
                value=s.last_ack_unix_s,
            )
        yield CounterMetricFamily(
            "flopwatch_agent_records_signed",
            "Records (DSSE envelopes) signed since the agent started.",
            value=s.records_signed,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_records_acked",
            "Record acknowledgements (accepted or duplicate) since the agent started.",
            value=s.records_acked,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_records_rejected",
            "Records the collector refused for good since the agent started.",
            value=s.records_rejected,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_sampling_errors",
            "GPU intervals that could not be measured (each becomes a signed gap).",
            value=s.sampling_errors,
        )
        gaps = CounterMetricFamily(
            "flopwatch_agent_gaps",
            "Signed gap entries (unmeasured GPU time or lost records), by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(s.gaps.items()):
            gaps.add_metric([reason], n)
        yield gaps
        failures = CounterMetricFamily(
            "flopwatch_agent_attribution_errors",
            "Times an attribution source could not answer (its work went unattributed).",
            labels=["source"],
        )
        for source, n in sorted(s.attribution_errors.items()):
            failures.add_metric([source], n)
        yield failures
        refused = CounterMetricFamily(
            "flopwatch_agent_labels_refused",
            "Declared runs, accounts, classes and parent runs refused for failing their rule, "
            "or a parent declared without a run (each distinct value once; the reason is in the "
            "log). The work stayed measured: in the job's own run, with no account (the node's "
            "default), an unknown class or no parent.",
            labels=["field"],
        )
        for name in FIELDS:
            refused.add_metric([name], s.labels_refused.get(name, 0))
        yield refused
        if s.kubernetes is not None:
            yield from self._kubernetes_families(s.kubernetes)

    def _kubernetes_families(self, k: KubeStatus) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "flopwatch_agent_k8s_api_up",
            "1 when the last list or watch of this node's pods (and of namespaces, for the "
            "account label) on the Kubernetes API server succeeded; 0 while it fails (pods it "
            "has not described are attributed as unknown meanwhile).",
            value=1 if k.api_up else 0,
        )
        yield GaugeMetricFamily(
            "flopwatch_agent_k8s_pods_cached",
            "Pods of this node whose metadata the agent holds from the API server.",
            value=k.pods_cached,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_k8s_fallback_windows",
            "Pod windows (a pod's claim on a GPU or a process, per batch of readings) "
            "attributed without the pod's metadata from the API server: the pod as its own run, "
            "its namespace as account, source kubernetes-fallback in the record.",
            value=k.fallback_windows,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_k8s_api_errors",
            "Requests to the Kubernetes API server that failed (retried with backoff).",
            value=k.api_errors,
        )
        yield CounterMetricFamily(
            "flopwatch_agent_k8s_relists",
            "Lists of pods and namespaces: the first, and each after a watch's version was gone "
            "(410) or the server failed.",
            value=k.relists,
        )

    def _gpu_families(self, s: AgentSnapshot) -> Iterable[Metric]:
        labels = ["uuid", "index", "name"]
        estimate = GaugeMetricFamily(
            "flopwatch_agent_gpu_flops_per_second",
            f"FLOP rate estimate of the GPU, FLOPs per second, over its last measured interval "
            f"(FLOP model v{MODEL_VERSION}; declared precision of its jobs, bf16 if none).",
            labels=labels,
        )
        upper = GaugeMetricFamily(
            "flopwatch_agent_gpu_flops_per_second_upper",
            f"Sound upper bound on the GPU's FLOP rate, FLOPs per second, over its last "
            f"measured interval (FLOP model v{MODEL_VERSION}: fastest precision, max SM clock).",
            labels=labels,
        )
        pipes = GaugeMetricFamily(
            "flopwatch_agent_gpu_pipe_active_ratio",
            "Fraction of the GPU's elapsed SM-cycles each pipe was busy over its last measured "
            "interval (GPM; 0 where the GPU has no GPM).",
            labels=[*labels, "pipe"],
        )
        ends = GaugeMetricFamily(
            "flopwatch_agent_gpu_last_interval_end_timestamp_seconds",
            "Unix time at which the GPU's last measured interval ended.",
            labels=[*labels, "method"],
        )
        for g in s.gpus:
            values = [g.uuid, str(g.index), g.name]
            estimate.add_metric(values, g.rate_estimate)
            upper.add_metric(values, g.rate_upper)
            for pipe, ratio in sorted(g.pipe_active.items()):
                pipes.add_metric([*values, pipe], ratio)
            ends.add_metric([*values, g.method], g.end_unix_s)
        yield from (estimate, upper, pipes, ends)


def register_agent_metrics(
    registry: CollectorRegistry, snapshot: Callable[[], AgentSnapshot]
) -> AgentMetrics:
    """Register the agent's collector on `registry` (a fresh one per agent or test)."""
    metrics = AgentMetrics(snapshot)
    registry.register(metrics)
    return metrics


class MetricsServer:
    """Serves /metrics on HOST:PORT (port 0: a free one, see `port`) from a fresh registry."""

    def __init__(self, listen: str, snapshot: Callable[[], AgentSnapshot]) -> None:
        host, port = host_port(listen)
        self.registry = CollectorRegistry()
        register_agent_metrics(self.registry, snapshot)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"cannot serve agent metrics on {listen}: {e.strerror}") from e
        self.port = int(self._server.server_port)
        log.info("agent metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
