"""`flopwatch collector`: verify, aggregate and alert on records from agents."""

from __future__ import annotations

import argparse
import asyncio
import signal
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, host_port
from flopwatch.cli.config_file import add_config_file, toml_accepts
from flopwatch.cli.tlog_args import add_tlog_arguments, tlog_config
from flopwatch.errors import ConfigError
from flopwatch.tlog.tiles import MAX_ENTRY_BYTES

if TYPE_CHECKING:
    from flopwatch.collector.config import PendingKeyLimits, ServerLimits, WebhookConfig

HELP = "run the collector: verify signed records, total FLOPs per job, alert, serve metrics"


def parse_thresholds(text: str) -> tuple[int, ...]:
    """'1e25,1e26' -> (10**25, 10**26), exact; each at most MAX_THRESHOLD_FLOPS."""
    from flopwatch.collector.config import MAX_THRESHOLD_FLOPS

    out = []
    for part in text.split(","):
        shown = part.strip()[:40]
        try:
            value = Decimal(part.strip())
        except InvalidOperation:
            raise ConfigError(f"threshold {shown!r} is not a number") from None
        if not value.is_finite():  # NaN, Infinity (TOML's nan, inf, 1e999)
            raise ConfigError(f"threshold {shown!r} is not a number of FLOPs")
        # Checked on the exponent first: 1e2000000 is never turned into an integer.
        if value.adjusted() >= len(str(MAX_THRESHOLD_FLOPS)) or value > MAX_THRESHOLD_FLOPS:
            raise ConfigError(f"threshold {shown!r} must be below 10^40 FLOPs")
        if value <= 0 or value != value.to_integral_value():
            raise ConfigError(f"threshold {shown!r} must be a positive whole number of FLOPs")
        out.append(int(value))
    return tuple(sorted(set(out)))


def _webhook(args: argparse.Namespace) -> WebhookConfig | None:
    from flopwatch.collector.config import WebhookConfig

    if args.webhook_url is None:
        if args.webhook_secret_file is not None:
            raise ConfigError("--webhook-secret-file needs --webhook-url")
        return None
    return WebhookConfig(url=args.webhook_url, secret_file=args.webhook_secret_file)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "collector",
        help=HELP,
        description=HELP
        + ". Records are acknowledged only after a durable commit; duplicates are ignored.",
    )
    p.add_argument("--listen", default="127.0.0.1:7443", metavar="HOST:PORT", help="gRPC address")
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="where totals, chains and alerts are kept: sqlite:PATH (embedded, one collector: "
        "created on first start, and locked while it runs, PATH-collector.lock) or "
        "postgresql://USER@HOST:PORT/DATABASE (several collectors may share it; needs "
        "pip install 'flopwatch[postgres]') (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-listen",
        default="127.0.0.1:9464",
        metavar="HOST:PORT",
        help="Prometheus /metrics address; 'off' disables (default: %(default)s)",
    )
    p.add_argument(
        "--health-listen",
        default="off",
        metavar="HOST:PORT",
        help="also serve the standard gRPC health service (grpc.health.v1.Health) alone, in "
        "plaintext, on this address, for probes that cannot present a client certificate "
        "(Kubernetes grpc probes); it tells whether the collector serves, nothing else. Health "
        "is always served on --listen too. 'off' disables (default: %(default)s)",
    )
    thresholds = p.add_argument(
        "--thresholds",
        default="1e23,1e24,1e25,1e26",
        help="comma-separated FLOP thresholds (in the config file also a list: thresholds = "
        "[1e23, 1e24]); each raises an alert once per job, with the projected time to the next "
        "one at the job's average rate (default: %(default)s)",
    )
    toml_accepts(thresholds, list, int, float)
    run_thresholds = p.add_argument(
        "--run-thresholds",
        default="eu-ai-act,us-ca-sb53",
        metavar="RULES",
        help="thresholds on each run's cumulative compute (every job, node and cluster of the "
        "run plus its ancestors', flopwatch runs declare): comma-separated presets (eu-ai-act: "
        "1e23 and 1e25 FLOP, and a derived run above a third of its parent's cumulative "
        "compute; us-ca-sb53: 1e26 operations) and numbers, or 'none' (in the config file "
        "also a list: run_thresholds = ['eu-ai-act', 5e24]); each alerts once per run, and "
        "once more ahead of time when the run's current rate reaches it within "
        "--forecast-days (default: %(default)s)",
    )
    toml_accepts(run_thresholds, list, int, float)
    account_thresholds = p.add_argument(
        "--account-thresholds",
        default="eu-ai-act,us-ca-sb53",
        metavar="RULES",
        help="thresholds on each account's compute over each --account-windows window (catches "
        "a run split into many names); presets and numbers as --run-thresholds, or 'none'; "
        "each alerts once per (account, window) (default: %(default)s)",
    )
    toml_accepts(account_thresholds, list, int, float)
    forecast = p.add_argument(
        "--forecast-days",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="alert when a run, at its current rate (its figure over its measured span, after "
        "its first hour), will reach one of its thresholds within this many days; 0: no "
        "forecasts (default: %(default)s, the EU AI Act's two weeks to notify)",
    )
    toml_accepts(forecast, int, float)
    min_span = p.add_argument(
        "--forecast-min-span-s",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="the least measured span of a run before its rate is trusted for forecasts, 0 to "
        "365 days in seconds (default: %(default)s; lower only for demos and tests)",
    )
    toml_accepts(min_span, int, float)
    p.add_argument(
        "--alert-basis",
        "--alert-on",
        dest="alert_basis",
        choices=["upper", "estimate"],
        default="upper",
        help="which figure alerts compare with a threshold (default upper: no crossing missed)",
    )
    silent_after = p.add_argument(
        "--silent-after",
        default="5m",
        metavar="DURATION",
        help="report an enrolled node that sent no record for this long (flopwatch_node_silent, "
        "one alert per silence), e.g. 90s, 5m, 1h (default: %(default)s)",
    )
    toml_accepts(silent_after, int, float)  # seconds
    windows = p.add_argument(
        "--account-windows",
        default="30,90,365",
        metavar="DAYS,...",
        help="trailing windows of UTC days over which `flopwatch accounts` totals each account, "
        "so a run split into many names is still seen (in the config file also a list) "
        "(default: %(default)s)",
    )
    toml_accepts(windows, list, int)
    kept = p.add_argument(
        "--account-days-kept",
        type=int,
        default=400,
        metavar="DAYS",
        help="UTC days of per-account day sums the store keeps (older ones are deleted; totals "
        "since the first record stay): at least the longest --account-windows, at most 3660; "
        "collectors sharing a database should agree (default: %(default)s)",
    )
    toml_accepts(kept, int)
    recent = p.add_argument(
        "--metrics-recent",
        default="24h",
        metavar="DURATION",
        help="/metrics shows per-job, per-run and per-account series only for those active "
        "within this time (their latest measured interval ended since), so a scrape stays "
        "small however many jobs were seen; the store keeps every total (default: %(default)s)",
    )
    toml_accepts(recent, int, float)  # seconds
    most = p.add_argument(
        "--metrics-max-series",
        type=int,
        default=10_000,
        metavar="N",
        help="at most this many job, run and account series each on /metrics (the most "
        "recently active) (default: %(default)s)",
    )
    toml_accepts(most, int)
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="also POST every alert (thresholds, silent nodes, chain forks) as JSON to this "
        "URL, retried with backoff from a background thread",
    )
    p.add_argument(
        "--webhook-secret-file",
        type=Path,
        metavar="FILE",
        help="shared secret (mode 0600) to sign webhook posts: X-Flopwatch-Signature: "
        "sha256=HMAC-SHA256(secret, X-Flopwatch-Timestamp + '.' + body)",
    )
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="collector key (Ed25519 PEM, mode 0600) that signs the transparency log's tree heads "
        "and job reports; regulators pin its key id (logged at start). Default: next to a SQLite "
        "database (flopwatch.db -> flopwatch-collector-key.pem), created on first start; "
        "required with PostgreSQL (every collector sharing the database uses the same key)",
    )
    tree_head_interval = p.add_argument(
        "--tree-head-interval",
        default="10s",
        metavar="DURATION",
        help="sign a tree head of the transparency log this often when it grew, e.g. 10s, 1m "
        "(default: %(default)s)",
    )
    toml_accepts(tree_head_interval, int, float)  # seconds
    p.add_argument(
        "--enroll-on-first-use",
        action="store_true",
        help="trust any new node key on first contact (labs and demos only; logged as a warning)",
    )
    workers = p.add_argument(
        "--verify-workers",
        default="auto",
        metavar="N",
        help="processes that verify records (signatures, recomputed FLOPs) while the ingest "
        "thread commits the batch before: 'auto' is one per CPU, at most 4, none on one CPU; 0 "
        "verifies on the ingest thread (default: %(default)s)",
    )
    toml_accepts(workers, int)
    add_tlog_arguments(p)
    add_tls_arguments(p, "collector")
    _add_limits(p)
    add_config_file(p, env_prefix="FLOPWATCH_COLLECTOR_", run=run)


# (flag, ServerLimits field, help): whole numbers; 0 turns a stream cap off.
_COUNTS = (
    ("--max-connections", "max_connections", "TCP connections on the gRPC port at once"),
    ("--max-streams", "max_streams", "RPCs in progress at once, all clients together"),
    ("--max-streams-per-connection", "max_streams_per_connection", "streams on one connection"),
    (
        "--max-streams-per-address",
        "max_streams_per_address",
        "Submit streams at once from one client IP address (raise it when agents reach the "
        "collector through one NAT or proxy address; 0: no cap)",
    ),
    (
        "--max-streams-per-certificate",
        "max_streams_per_certificate",
        "Submit streams at once with one client certificate (with one certificate per node, "
        "4 is plenty; a certificate shared by all agents needs the node count; 0: no cap)",
    ),
    (
        "--max-inflight-bytes",
        "max_inflight_bytes",
        "bytes of envelopes read and not yet acked, all streams together; a stream finding no "
        "room waits before it reads on",
    ),
    (
        "--max-inflight-bytes-per-peer",
        "max_inflight_bytes_per_peer",
        "the same for one peer (client address and certificate), so a flooding peer waits on "
        "its own share",
    ),
    ("--max-commit-batch-bytes", "max_commit_batch_bytes", "bytes of envelopes in one batch"),
    (
        "--max-label-values",
        "max_label_values",
        "distinct nodes (and peers) in the rejection metrics; more count as 'other'",
    ),
)
_DURATIONS = (
    (
        "--stream-idle-timeout",
        "stream_idle_timeout_s",
        "end a Submit stream that has nothing in flight and sends nothing this long (the agent "
        "reconnects when it has a record)",
    ),
    (
        "--handshake-timeout",
        "handshake_timeout_s",
        "a connection's TLS handshake must end within this time",
    ),
    ("--connection-idle-timeout", "connection_idle_timeout_s", "close a connection with no call"),
    ("--keepalive-time", "keepalive_time_s", "ping a connection quiet this long"),
    (
        "--keepalive-timeout",
        "keepalive_timeout_s",
        "close it if the ping is not answered in this time",
    ),
    (
        "--rejection-log-interval",
        "rejection_log_interval_s",
        "log rejected records once per peer per period: the first at once, then a summary",
    ),
)

# (flag, PendingKeyLimits field, help): whole numbers; 0 notes no key.
_PENDING = (
    (
        "--max-pending-keys-per-node",
        "max_per_node",
        "keys awaiting approval that claim one node id; another key claiming it is not listed",
    ),
    ("--max-pending-keys", "max_total", "keys awaiting approval in all"),
    (
        "--max-new-pending-keys-per-minute",
        "max_new_per_minute",
        "keys first seen (noted as awaiting approval) per minute",
    ),
)


def _add_limits(p: argparse.ArgumentParser) -> None:
    from flopwatch.collector.config import PendingKeyLimits, ServerLimits

    defaults = ServerLimits()
    g = p.add_argument_group(
        "resource limits (what clients may make the collector spend; docs/operator-guide.md)"
    )
    for flag, name, text in _COUNTS:
        g.add_argument(
            flag,
            type=int,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{text} (default: %(default)s)",
        )
    for flag, name, text in _DURATIONS:
        g.add_argument(
            flag,
            default=f"{getattr(defaults, name):g}s",
            metavar="DURATION",
            help=f"{text} (default: %(default)s)",
        )
    g.add_argument(
        "--max-envelope-bytes",
        type=int,
        default=MAX_ENTRY_BYTES,
        metavar="N",
        help="refuse a record (envelope) larger than this, with the reason 'oversized'. The "
        "default, 65535, is the most a tlog-tiles log entry holds, and agents never sign "
        "larger records; without --tiles-listen/--tiles-dir it may be raised (up to 1048576) "
        "for large records agents of earlier versions left in their spools (default: "
        "%(default)s)",
    )
    pending = PendingKeyLimits()
    k = p.add_argument_group(
        "keys awaiting approval (a key that presents itself with a signed record is listed by "
        "`flopwatch nodes list` for an operator to approve; records of a key past these bounds "
        "are answered retry and counted in flopwatch_pending_key_records_refused; 0: list none, "
        "enroll only with tokens or key files)"
    )
    for flag, name, text in _PENDING:
        k.add_argument(
            flag,
            type=int,
            default=getattr(pending, name),
            metavar="N",
            help=f"{text} (default: %(default)s)",
        )


# The largest count a limit takes: gRPC's channel arguments are C ints. Byte budgets may be
# larger (they are Python ints), up to 2^53 (8 PiB).
_MAX_COUNT = 2**31 - 1
_MAX_BYTES = 2**53


def _server_limits(args: argparse.Namespace) -> ServerLimits:
    from flopwatch.collector.config import ServerLimits, parse_duration

    values: dict[str, Any] = {}
    for flag, name, _ in _COUNTS:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value < 0 or (value == 0 and not name.startswith("max_streams_per_")):
            raise ConfigError(f"{flag} must be positive, got {value}")
        top = _MAX_BYTES if "_bytes" in name else _MAX_COUNT
        if value > top:
            raise ConfigError(f"{flag} must be at most {top}, got {value}")
        values[name] = value
    for flag, name, _ in _DURATIONS:
        values[name] = parse_duration(getattr(args, flag.removeprefix("--").replace("-", "_")))
    return ServerLimits(**values)


def _pending_limits(args: argparse.Namespace) -> PendingKeyLimits:
    from flopwatch.collector.config import PendingKeyLimits

    values: dict[str, int] = {}
    for flag, name, _ in _PENDING:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if not 0 <= value <= _MAX_COUNT:
            raise ConfigError(f"{flag} must be from 0 to {_MAX_COUNT}, got {value}")
        values[name] = value
    return PendingKeyLimits(**values)


def run(args: argparse.Namespace) -> int:
    from flopwatch.collector.alerts.scopes import parse_rules
    from flopwatch.collector.config import (
        AccountWindows,
        CollectorConfig,
        MetricsSeries,
        parse_account_windows,
        parse_duration,
        parse_verify_workers,
    )
    from flopwatch.collector.server import run_collector

    host_port(args.listen)
    metrics = None if args.metrics_listen == "off" else args.metrics_listen
    if metrics is not None:
        host_port(metrics)
    health = None if args.health_listen == "off" else args.health_listen
    if health is not None:
        host_port(health)
    config = CollectorConfig(
        listen=args.listen,
        db=args.db,
        metrics_listen=metrics,
        health_listen=health,
        thresholds=parse_thresholds(args.thresholds),
        alert_basis=args.alert_basis,
        run_thresholds=parse_rules(args.run_thresholds),
        account_thresholds=parse_rules(args.account_thresholds),
        forecast_days=args.forecast_days,
        forecast_min_span_s=args.forecast_min_span_s,
        silent_after_s=parse_duration(args.silent_after),
        webhook=_webhook(args),
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        enroll_on_first_use=args.enroll_on_first_use,
        log_key=args.key,
        tree_head_interval_s=parse_duration(args.tree_head_interval),
        verify_workers=parse_verify_workers(args.verify_workers),
        server=_server_limits(args),
        tlog=tlog_config(args),
        max_envelope_bytes=args.max_envelope_bytes,
        pending_keys=_pending_limits(args),
        account_windows=AccountWindows(
            parse_account_windows(args.account_windows), args.account_days_kept
        ),
        metrics_series=MetricsSeries(parse_duration(args.metrics_recent), args.metrics_max_series),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_collector(config, stop=stop)

    asyncio.run(main())
    return EXIT_OK
