"""`flopwatch monitor`: a regulator's own follower of one or more collectors' logs.

It fetches each log's tlog-tiles, checks every checkpoint (the log key, the witness policy's
cosignatures, consistency with the checkpoint it kept), verifies and recomputes every entry,
counts no GPU-second twice across all the logs, and keeps totals per job, run, account and legal
entity (all time, and over rolling windows of UTC days per account and entity) in its own SQLite
state. Node keys come from each log's key statements (checked with the log key). The thresholds
given here never leave this machine.

Example (logs.toml holds one [[log]] table per collector: name, url, vkey, optional node_keys
(pins), token_file or client_cert/client_key, ca_file; see docs/regulators.md, "Running the
monitor"):

    flopwatch monitor --logs logs.toml --state monitor.db --witness-policy policy.txt \\
        --thresholds run:1e26,entity:1e26,account@30:1e25 --entities entities.toml \\
        --webhook-url https://alerts.regulator.example/flopwatch \\
        --webhook-secret-file webhook.secret --metrics-listen 127.0.0.1:9467
    flopwatch monitor --logs logs.toml --state monitor.db --once --json   # catch up, print

Exit status with --once: 0 when every log was followed without a problem, 1 when any problem
is recorded in the state (printed with its reason) or a log could not be read, 2 for bad
configuration, 3 when the state could not be written.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK, host_port
from flopwatch.cli.config_file import add_config_file, toml_accepts
from flopwatch.errors import ConfigError

if TYPE_CHECKING:
    from flopwatch.monitor.service import Monitor

HELP = "follow collectors' logs as a regulator: verify every entry, total, alert"
ENV_PREFIX = "FLOPWATCH_MONITOR_"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "monitor",
        help=HELP,
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--logs", type=Path, required=True, metavar="FILE.toml", help="the logs to follow"
    )
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        metavar="FILE.db",
        help="the monitor's SQLite state (created if missing; one monitor per file)",
    )
    p.add_argument(
        "--witness-policy",
        type=Path,
        metavar="FILE",
        help="tlog-policy file every checkpoint's cosignatures must satisfy (a log's own "
        "witness_policy overrides it); without one, checkpoints need no cosignature",
    )
    thresholds = p.add_argument(
        "--thresholds",
        metavar="KIND[@DAYS]:FLOPS[:BASIS],...",
        help="comma-separated alert thresholds: alert when a total reaches FLOPS; KIND is job, "
        "run, account or entity, or account@DAYS / entity@DAYS for a rolling window of "
        "--account-windows; BASIS upper (default: no crossing missed) or estimate (in the "
        'config file also a list: thresholds = ["run:1e26", "account@30:1e25"])',
    )
    toml_accepts(thresholds, list)
    p.add_argument(
        "--entities",
        type=Path,
        metavar="FILE.toml",
        help='[entities] "Legal entity" = ["LOG:ACCOUNT", ...]: accounts at several operators '
        "counted as one entity",
    )
    p.add_argument("--webhook-url", metavar="URL", help="POST alerts and problems as JSON here")
    p.add_argument(
        "--webhook-secret-file",
        type=Path,
        metavar="FILE",
        help="shared secret (mode 0600) for the X-Flopwatch-Signature HMAC header",
    )
    p.add_argument(
        "--metrics-listen",
        default="off",
        metavar="HOST:PORT",
        help="serve Prometheus metrics here, or off (default: %(default)s)",
    )
    p.add_argument(
        "--poll-interval-s", type=float, default=60.0, help="seconds between polls (default 60)"
    )
    p.add_argument(
        "--max-tiles-per-poll",
        type=int,
        default=1024,
        help="tile and bundle requests per log per poll; a log further behind goes on in the "
        "next round at once (default 1024)",
    )
    p.add_argument(
        "--max-entry-bytes",
        type=int,
        default=0xFFFF,
        help="refuse entries larger than this (default 65535, the tlog-tiles bound)",
    )
    p.add_argument(
        "--http-timeout-s", type=float, default=30.0, help="seconds per request (default 30)"
    )
    p.add_argument(
        "--account-windows",
        default="30,90,365",
        metavar="DAYS,...",
        help="rolling windows of UTC days summed per account and entity, by each record's own "
        "time; thresholds account@DAYS:FLOPS and entity@DAYS:FLOPS apply to them "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--account-days-kept",
        type=int,
        default=400,
        metavar="DAYS",
        help="UTC days of per-account and per-entity sums kept, at least the longest window "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--once", action="store_true", help="catch up every log once, print the totals and exit"
    )
    p.add_argument("--json", action="store_true", help="with --once: print JSON")
    add_config_file(p, env_prefix=ENV_PREFIX, run=run)


def _config(args: argparse.Namespace) -> Any:
    from flopwatch.monitor.config import (
        MonitorConfig,
        MonitorLimits,
        load_entities,
        load_logs,
        load_policy,
    )
    from flopwatch.monitor.fetch import FetchLimits
    from flopwatch.monitor.labels import Entities
    from flopwatch.monitor.totals import parse_threshold
    from flopwatch.monitor.windows import Windows, parse_windows

    if args.max_tiles_per_poll < 1 or not 1 <= args.max_entry_bytes <= 0xFFFF:
        raise ConfigError("--max-tiles-per-poll >= 1 and --max-entry-bytes 1 to 65535")
    if args.http_timeout_s <= 0 or args.poll_interval_s <= 0:
        raise ConfigError("--http-timeout-s and --poll-interval-s must be positive")
    if args.metrics_listen != "off":
        host_port(args.metrics_listen)
    policy = None if args.witness_policy is None else load_policy(args.witness_policy)
    texts = [t for t in (args.thresholds or "").split(",") if t.strip()]
    windows = Windows(parse_windows(args.account_windows), args.account_days_kept)
    return MonitorConfig(
        logs=load_logs(args.logs, policy),
        state=args.state,
        thresholds=tuple(parse_threshold(t, windows.days) for t in texts),
        windows=windows,
        entities=Entities() if args.entities is None else load_entities(args.entities),
        webhook_url=args.webhook_url,
        webhook_secret_file=args.webhook_secret_file,
        metrics_listen=None if args.metrics_listen == "off" else args.metrics_listen,
        poll_interval_s=args.poll_interval_s,
        limits=MonitorLimits(
            max_tiles_per_poll=args.max_tiles_per_poll,
            fetch=FetchLimits(timeout_s=args.http_timeout_s, max_entry_bytes=args.max_entry_bytes),
        ),
    )


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from flopwatch.monitor.metrics import register
    from flopwatch.monitor.service import Monitor
    from flopwatch.monitor.webhook import MonitorWebhook
    from flopwatch.webhook_signing import load_secret

    config = _config(args)
    if config.webhook_secret_file is not None and config.webhook_url is None:
        raise ConfigError("--webhook-secret-file needs --webhook-url")
    webhook = None
    if config.webhook_url is not None:
        secret = None
        if config.webhook_secret_file is not None:
            secret = load_secret(config.webhook_secret_file)
        webhook = MonitorWebhook(config.webhook_url, secret=secret)
    monitor = Monitor(config, webhook=webhook)
    server = None
    try:
        if config.metrics_listen is not None:
            host, port = host_port(config.metrics_listen)
            registry = CollectorRegistry()
            register(registry, monitor.snapshot, config.limits.max_metric_totals)
            server = start_http_server(port, addr=host, registry=registry)
        if args.once:
            monitor.catch_up()
            return _print(monitor, as_json=args.json)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        monitor.run(stop)
        return EXIT_OK
    finally:
        if server is not None:
            server[0].shutdown()
        monitor.close()
        if webhook is not None:
            webhook.close()


def _print(monitor: Monitor, *, as_json: bool) -> int:
    totals = monitor.state.totals()
    problems = monitor.state.problems()
    positions = monitor.state.positions()
    days = monitor.config.windows.days
    windows = {k: monitor.ledger.window_totals(*k) for k in sorted(monitor.ledger.days)}
    if as_json:
        out = {
            "logs": {n: {"checkpoint": k, "position": p} for n, (k, p) in positions.items()},
            "totals": [
                {
                    "kind": kind,
                    "key": key,
                    "flops_estimate": str(f.flops_estimate),
                    "flops_upper": str(f.flops_upper),
                    "gpu_intervals": f.gpu_intervals,
                }
                for (kind, key), f in sorted(totals.items())
            ],
            "windows": [
                {
                    "kind": kind,
                    "key": key,
                    "days": n,
                    "flops_estimate": str(f.flops_estimate),
                    "flops_upper": str(f.flops_upper),
                    "gpu_intervals": f.gpu_intervals,
                }
                for (kind, key), figures in windows.items()
                for n, f in zip(days, figures, strict=True)
            ],
            "problems": [
                {"log": p.log, "reason": p.reason, "subject": p.subject, "detail": p.detail}
                for p in problems
            ],
        }
        sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
    else:
        for name, (kept, position) in sorted(positions.items()):
            print(f"log {name}: checkpoint {kept}, {position} entries judged")
        for (kind, key), f in sorted(totals.items()):
            print(f"{kind:7} {key}: {f.flops_estimate:.4g} FLOPs (upper {f.flops_upper:.4g})")
        for (kind, key), figures in windows.items():
            shown = ", ".join(
                f"{n} d {f.flops_estimate:.4g} (upper {f.flops_upper:.4g})"
                for n, f in zip(days, figures, strict=True)
            )
            print(f"{kind:7} {key} last UTC days: {shown} FLOPs")
        for p in problems:
            print(f"PROBLEM log {p.log}: {p.reason} ({p.subject}): {p.detail}")
    unread = [fl for fl in monitor.followers if fl.stats.last_error]
    for fl in unread:
        print(f"UNREACHABLE log {fl.name}: {fl.stats.last_error}", file=sys.stderr)
    return EXIT_FAILED if problems or unread else EXIT_OK
