"""Collector configuration: one frozen object, filled from the command line.

Bounds the collector enforces on queries and notifications are named here (`QueryLimits`,
`WebhookConfig`), and what any client may make it spend (`ServerLimits`: connections, streams,
bytes in flight, idle and handshake timeouts, keepalive, rejection log lines), next to the
thresholds and timeouts an operator sets.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from flopwatch.collector.alerts.scopes import (
    DEFAULT_FORECAST_DAYS,
    DEFAULT_FORECAST_MIN_SPAN_S,
    DEFAULT_RULES,
    ScopedPolicy,
    parse_rules,
)
from flopwatch.collector.alerts.scopes import (
    MAX_THRESHOLD_FLOPS as SCOPE_MAX_THRESHOLD_FLOPS,
)
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.store.records import Rule
from flopwatch.errors import ConfigError
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.tlog.tiles import MAX_ENTRY_BYTES

DEFAULT_THRESHOLDS = (10**23, 10**24, 10**25, 10**26)  # FLOPs
# The largest FLOP threshold, of jobs as of runs and accounts (flopwatch.collector.alerts.scopes).
MAX_THRESHOLD_FLOPS = SCOPE_MAX_THRESHOLD_FLOPS
# The longest duration an option takes (100 years): its nanoseconds still fit in an int64.
MAX_DURATION_S = 100 * 365 * 86400.0
DEFAULT_SILENT_AFTER_S = 300.0  # an enrolled node quiet this long is reported silent
DEFAULT_LIVENESS_CHECK_S = 15.0  # how often silence is looked for
# How often the collector looks for run lineage declared by others (`flopwatch runs declare`),
# whose run alerts it then decides without waiting for the run's next records.
DEFAULT_LINEAGE_CHECK_S = 10.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '24h', '7d' -> seconds (positive)."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"expected a positive duration such as 90s, 5m, 24h or 7d, got {text!r}")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not seconds <= MAX_DURATION_S:  # also infinity, from a number of 309 digits
        raise ConfigError(f"duration {text[:40]!r} is longer than 100 years")
    return seconds


MAX_VERIFY_WORKERS = 64
# Beyond this many, the ingest thread (judging and committing) is the limit, not verifying.
AUTO_VERIFY_WORKERS_MAX = 4


def _quota_in(directory: Path, v2: bool) -> float | None:
    """The CPU quota one cgroup directory sets, in CPUs; None for none (or unreadable)."""
    try:
        if v2:
            quota, period = (directory / "cpu.max").read_text().split()
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        return None if quota in ("max", "-1") else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cgroup_quota(proc_cgroup: str, root: Path) -> float | None:
    """CPUs' worth of time the cgroup quota allows this process (the tightest of its cgroup and
    their parents), or None when no quota applies. cgroup v2 (`cpu.max`) and v1 (CFS quota)."""
    quotas = []
    for line in proc_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        v2 = controllers == ""  # v2: every controller in one hierarchy
        if not v2 and "cpu" not in controllers.split(","):
            continue
        base = root if v2 else root / controllers
        here = Path(path)
        for d in (here, *here.parents):
            quota = _quota_in(base / d.relative_to("/"), v2)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def usable_cpus(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")) -> int:
    """CPUs this process may use: its affinity, cut to its cgroup's CPU quota (a container's
    CPU limit), at least 1."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota = _cgroup_quota((proc / "cgroup").read_text(), root)
    except OSError:
        quota = None
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def parse_verify_workers(text: str) -> int:
    """'auto' -> one verify worker per CPU this process may use (`usable_cpus`), at most 4, and
    none on a single CPU (records are then verified on the ingest thread); else 0 to 64.

    One per CPU, not one less: a worker waits while the ingest thread commits, so on 2 CPUs two
    workers beside the ingest thread measured 62k GPU-interval records/s, one 47k, none 38k
    (bench/collector_throughput.py --intervals 10)."""
    if text.strip().lower() == "auto":
        cpus = usable_cpus()
        return 0 if cpus < 2 else min(cpus, AUTO_VERIFY_WORKERS_MAX)
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_VERIFY_WORKERS:
        raise ConfigError(
            f"--verify-workers takes 'auto' or 0 to {MAX_VERIFY_WORKERS}, got {text!r}"
        )
    return n


@dataclass(frozen=True)
class QueryLimits:
    """Paging of ListJobs, ListJobGpus and ListNodes: a page holds at most `max_page_size`
    rows and at most `max_page_bytes` of serialized rows, whichever comes first, so an answer
    stays under the gRPC message limit whatever the lengths of ids (256 characters each)."""

    default_page_size: int = 500
    max_page_size: int = 1000
    max_page_bytes: int = 768 * 1024


MAX_ACCOUNT_DAYS_KEPT = 3660  # ten years of per-account day sums at most


@dataclass(frozen=True)
class AccountWindows:
    """Per-account totals over trailing windows of UTC days (`flopwatch accounts`), so a run
    split into many names is still seen. The store keeps each account's sums per UTC day for
    `kept_days` (at least the longest window, at most `MAX_ACCOUNT_DAYS_KEPT`) and deletes older
    days; a window sums its days when asked. Collectors sharing a database should keep the same
    number of days (the smallest wins)."""

    days: tuple[int, ...] = (30, 90, 365)
    kept_days: int = 400

    def __post_init__(self) -> None:
        if not self.days or any(d < 1 for d in self.days):
            raise ConfigError(f"account windows must be positive numbers of days, got {self.days}")
        if not max(self.days) <= self.kept_days <= MAX_ACCOUNT_DAYS_KEPT:
            raise ConfigError(
                f"account days kept ({self.kept_days}) must be at least the longest window "
                f"({max(self.days)}) and at most {MAX_ACCOUNT_DAYS_KEPT}"
            )


def parse_account_windows(text: str) -> tuple[int, ...]:
    """'30,90,365' -> (30, 90, 365): days, ascending, each once."""
    try:
        days = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        days = []
    if not days or days[0] < 1 or days[-1] > MAX_ACCOUNT_DAYS_KEPT:
        raise ConfigError(
            f"--account-windows takes days such as 30,90,365 (1 to {MAX_ACCOUNT_DAYS_KEPT}), "
            f"got {text!r}"
        )
    return tuple(days)


@dataclass(frozen=True)
class MetricsSeries:
    """Bounds on the per-job, per-run and per-account series of /metrics
    (`flopwatch.collector.metrics`), so a scrape stays small however many jobs were ever seen:
    a job, run or account has series while it was active (its latest measured interval ended)
    within `recent_s` of now, and at most `max_series` of each kind (the most recently active)
    are shown. Totals of the others stay in the store (`flopwatch jobs`, `runs`, `accounts`)."""

    recent_s: float = 86_400.0
    max_series: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.recent_s <= MAX_DURATION_S:
            raise ConfigError(f"--metrics-recent must be positive, got {self.recent_s}")
        if not 1 <= self.max_series <= MAX_METRICS_SERIES:
            raise ConfigError(
                f"--metrics-max-series must be from 1 to {MAX_METRICS_SERIES}, "
                f"got {self.max_series}"
            )


MAX_METRICS_SERIES = 1_000_000  # per kind (jobs, runs, accounts)


@dataclass(frozen=True)
class ServerLimits:
    """What clients may hold of a collector, each and together (`flopwatch.collector.server`,
    `flopwatch.collector.rpc.admission`, `flopwatch.collector.ingest.budget`).

    A client is told RESOURCE_EXHAUSTED when a stream cap is reached; a stream over its byte
    budget waits (gRPC flow control then holds its sender back). 0 turns a stream cap off.
    """

    # TCP connections on one listening port (gRPC refuses more before the TLS handshake).
    max_connections: int = 10_000
    # RPCs in progress on the server at once (each agent holds one Submit stream).
    max_streams: int = 20_000
    # Streams one HTTP/2 connection may carry at once (an agent uses one).
    max_streams_per_connection: int = 16
    # Submit streams at once from one client address, and from one client certificate. A
    # shared agent certificate (docs/operator-guide.md) needs the per-certificate cap as high
    # as the node count; with one certificate per node, 4 is plenty.
    max_streams_per_address: int = 32
    max_streams_per_certificate: int = 20_000
    # Bytes of envelopes read but not yet acked, over all streams, and from one peer (client
    # address and certificate); a stream over either waits before it reads on.
    max_inflight_bytes: int = 256 << 20
    max_inflight_bytes_per_peer: int = 16 << 20
    # Bytes of envelopes judged in one commit batch (next to Limits.max_commit_batch).
    max_commit_batch_bytes: int = 8 << 20
    # A Submit stream with nothing in flight that sends no record for this long is ended
    # (UNAVAILABLE; the agent reconnects when it has something to send).
    stream_idle_timeout_s: float = 600.0
    # A connection must finish its TLS handshake within this; one with no call this long is
    # closed.
    handshake_timeout_s: float = 10.0
    connection_idle_timeout_s: float = 300.0
    # The server pings a connection quiet this long, and closes it when no answer comes in
    # keepalive_timeout_s (a peer gone without a word).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Rejected records: one log line per peer per period, and distinct node and peer label
    # values in the rejection metrics (the rest count as "other").
    rejection_log_interval_s: float = 60.0
    max_label_values: int = 1000


@dataclass(frozen=True)
class WebhookConfig:
    """HTTP POST of every alert as JSON, from a background thread
    (`flopwatch.collector.alerts.webhook`)."""

    url: str
    # Shared secret (file mode 0600) for the X-Flopwatch-Signature HMAC-SHA256 header; None
    # sends unsigned posts (logged as a warning).
    secret_file: Path | None = None
    timeout_s: float = 10.0  # per attempt
    max_attempts: int = 8  # then the notification is dropped (the alert stays in the store)
    backoff_initial_s: float = 1.0  # doubled after each failed attempt, jittered
    backoff_max_s: float = 120.0
    queue_max: int = 10_000  # undelivered notifications kept; more are dropped and counted


@dataclass(frozen=True)
class PendingKeyLimits:
    """Keys that presented themselves and await approval (`flopwatch nodes list`, `nodes enroll
    --key-id`, `nodes reject`). Any client certificate can present a new key with every record,
    so they are bounded: per claimed node id, in all, and in keys first seen per minute (all
    counted in the store, so they hold across restarts and for collectors sharing a database).
    A key past a bound is not noted; its records are answered "retry" (the agent keeps them)
    until an operator approves or rejects pending keys, or the node enrolls with a token."""

    max_per_node: int = 4
    max_total: int = 1000
    max_new_per_minute: int = 60


@dataclass(frozen=True)
class CollectorConfig:
    listen: str = "127.0.0.1:7443"  # HOST:PORT for gRPC; port 0 picks a free one
    db: str = (
        "sqlite:flopwatch.db"  # sqlite:PATH or postgresql://... (flopwatch.collector.store.factory)
    )
    metrics_listen: str | None = "127.0.0.1:9464"  # HOST:PORT for /metrics; None disables
    # HOST:PORT of a plaintext gRPC port that serves ONLY grpc.health.v1.Health, for probes
    # that cannot present a client certificate (Kubernetes `grpc:` probes); None: no such port
    # (Health is always served on `listen` too). Port 0 picks a free one.
    health_listen: str | None = None
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # FLOPs
    alert_basis: str = "upper"  # "upper" (default, no crossing missed) or "estimate"
    # Thresholds by scope (flopwatch.collector.alerts.scopes): a run's cumulative compute, and
    # each account over each of `account_windows`; presets or numbers. The same basis as jobs.
    run_thresholds: tuple[Rule, ...] = field(default_factory=lambda: parse_rules(DEFAULT_RULES))
    account_thresholds: tuple[Rule, ...] = field(default_factory=lambda: parse_rules(DEFAULT_RULES))
    forecast_days: float = DEFAULT_FORECAST_DAYS  # 0: no forecast alerts
    # The least measured span of a run before its rate is trusted for forecasts (the demo,
    # whose runs last seconds, lowers it).
    forecast_min_span_s: float = DEFAULT_FORECAST_MIN_SPAN_S
    insecure: bool = False  # plaintext gRPC; mTLS otherwise
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Trust on first use: enroll any new node key that connects. For demos and labs only; the
    # collector logs a warning. Otherwise keys must be enrolled by an operator first.
    enroll_on_first_use: bool = False
    silent_after_s: float = DEFAULT_SILENT_AFTER_S
    liveness_check_s: float = DEFAULT_LIVENESS_CHECK_S
    lineage_check_s: float = DEFAULT_LINEAGE_CHECK_S
    webhook: WebhookConfig | None = None
    # Transparency log: the collector key that signs its tree heads (None: next to a SQLite
    # database, created 0600 on first start; flopwatch.collector.log.key), and how often a head is
    # signed.
    log_key: Path | None = None
    tree_head_interval_s: float = 10.0
    # The log as C2SP checkpoints and tlog-tiles, witnessed (flopwatch.collector.log.tlog_service);
    # None: off.
    tlog: TlogConfig | None = None
    # Processes that verify records ahead of the ingest thread (flopwatch.collector.ingest.workers);
    # 0 verifies on the ingest thread.
    verify_workers: int = 0
    # Bytes of the largest envelope accepted; larger ones are refused ("oversized", the limit
    # named). Default and least: the 65,535 bytes a tlog-tiles log entry holds, which an agent's
    # records never exceed (flopwatch.agent.records.MAX_RECORD_BYTES). Up to
    # `limits.max_envelope_bytes` (1 MiB) without tiles, for records older agents spooled.
    max_envelope_bytes: int = MAX_ENTRY_BYTES
    limits: Limits = DEFAULT_LIMITS
    query: QueryLimits = field(default_factory=QueryLimits)
    pending_keys: PendingKeyLimits = field(default_factory=PendingKeyLimits)
    server: ServerLimits = field(default_factory=ServerLimits)
    account_windows: AccountWindows = field(default_factory=AccountWindows)
    metrics_series: MetricsSeries = field(default_factory=MetricsSeries)

    def __post_init__(self) -> None:
        self.scoped_policy  # noqa: B018 (checks the forecast settings)
        most = self.limits.max_envelope_bytes if self.tlog is None else MAX_ENTRY_BYTES
        if not MAX_ENTRY_BYTES <= self.max_envelope_bytes <= most:
            tiles = (
                " with the log's tiles on (a tile entry holds 65,535 bytes)" if self.tlog else ""
            )
            raise ConfigError(
                f"--max-envelope-bytes must be {MAX_ENTRY_BYTES} to {most}{tiles}, "
                f"got {self.max_envelope_bytes}"
            )

    @property
    def scoped_policy(self) -> ScopedPolicy:
        """The run and account thresholds, on the job alerts' basis."""
        return ScopedPolicy(
            self.run_thresholds,
            self.account_thresholds,
            "estimate" if self.alert_basis == "estimate" else "upper",
            self.forecast_days,
            self.forecast_min_span_s,
        )

    @property
    def ingest_limits(self) -> Limits:
        """The record limits applied to what agents send: `limits`, with `max_envelope_bytes`."""
        return dataclasses.replace(self.limits, max_envelope_bytes=self.max_envelope_bytes)
