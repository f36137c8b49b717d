"""`flopwatch collector`: verify, aggregate and alert on records from agents."""

from __future__ import annotations

import argparse
import asyncio
import signal
from decimal import Decimal, InvalidOperation
from typing import Any

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, host_port
from flopwatch.errors import ConfigError

HELP = "run the collector: verify signed records, total FLOPs per job, alert, serve metrics"


def parse_thresholds(text: str) -> tuple[int, ...]:
    """'1e25,1e26' -> (10**25, 10**26), exact."""
    out = []
    for part in text.split(","):
        try:
            value = Decimal(part.strip())
        except InvalidOperation:
            raise ConfigError(f"threshold {part!r} is not a number") from None
        if value <= 0 or value != value.to_integral_value():
            raise ConfigError(f"threshold {part!r} must be a positive whole number of FLOPs")
        out.append(int(value))
    return tuple(sorted(set(out)))


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "collector",
        help=HELP,
        description=HELP
        + ". Records are acknowledged only after a durable commit; duplicates are ignored.",
    )
    p.add_argument("--listen", default="127.0.0.1:7443", metavar="HOST:PORT", help="gRPC address")
    p.add_argument(
        "--db", default="sqlite:flopwatch.db", metavar="sqlite:PATH", help="database (SQLite)"
    )
    p.add_argument(
        "--metrics-listen",
        default="127.0.0.1:9464",
        metavar="HOST:PORT",
        help="Prometheus /metrics address; 'off' disables (default: %(default)s)",
    )
    p.add_argument(
        "--thresholds",
        default="1e25,1e26",
        help="comma-separated FLOP thresholds that raise an alert once per job",
    )
    p.add_argument(
        "--alert-on",
        choices=["upper", "estimate"],
        default="upper",
        help="which figure alerts compare with a threshold (default upper: no crossing missed)",
    )
    p.add_argument(
        "--enroll-on-first-use",
        action="store_true",
        help="trust any new node key on first contact (labs and demos only; logged as a warning)",
    )
    add_tls_arguments(p, "collector")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from collector.config import CollectorConfig
    from collector.server import run_collector

    host_port(args.listen)
    metrics = None if args.metrics_listen == "off" else args.metrics_listen
    if metrics is not None:
        host_port(metrics)
    config = CollectorConfig(
        listen=args.listen,
        db=args.db,
        metrics_listen=metrics,
        thresholds=parse_thresholds(args.thresholds),
        alert_basis=args.alert_on,
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        enroll_on_first_use=args.enroll_on_first_use,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_collector(config, stop=stop)

    asyncio.run(main())
    return EXIT_OK
