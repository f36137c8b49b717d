"""`flopwatch agent`: sample this node's GPUs, sign, spool and stream to a collector."""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from flopwatch.cli.common import add_tls_arguments, host_port
from flopwatch.errors import ConfigError

HELP = "run the node agent: sample GPU counters, attribute to jobs, sign and send to a collector"


def _speed(text: str) -> float | None:
    if text in ("max", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help=HELP,
        description=HELP
        + ". Every signed record is written to a local spool (fsync) before it is sent and "
        "resent until the collector acknowledges a durable commit.",
    )
    p.add_argument("--collector", required=True, metavar="HOST:PORT", help="collector gRPC address")
    p.add_argument(
        "--backend",
        default="nvml",
        metavar="nvml|replay:PATH|sim:N",
        help="where readings come from: the real GPUs through NVML (default), a recorded trace, "
        "or N simulated GPUs",
    )
    p.add_argument(
        "--jobs",
        type=Path,
        help="JOBS.json with job windows per pid (replay and manual attribution)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/flopwatch-agent"),
        help="node key (created on first start, mode 0600) and spool (default: %(default)s)",
    )
    p.add_argument("--node-id", default=socket.gethostname(), help="default: the host name")
    p.add_argument("--cluster", default="default", help="cluster name that namespaces job ids")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per sample (default 1)")
    p.add_argument(
        "--replay-speed",
        type=_speed,
        default=1.0,
        help="replay pacing: 1 = real time, 10 = ten times faster, max = no waiting",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="after a replay ends, seconds to wait for acknowledgements before giving up",
    )
    add_tls_arguments(p, "agent")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig
    from agent.service import run_agent

    host_port(args.collector)
    if args.interval <= 0:
        raise ConfigError("--interval must be positive")
    config = AgentConfig(
        collector=args.collector,
        backend=args.backend,
        state_dir=args.state_dir,
        node_id=args.node_id,
        cluster=args.cluster,
        interval_s=args.interval,
        jobs_file=args.jobs,
        replay_speed=args.replay_speed,
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        drain_timeout_s=args.drain_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_agent(config, stop=stop)
