"""A simulated node agent in its own process: `python -m tests.faults.agent_main --help`.

It runs the real agent (flopwatch.agent.service.Agent: signing, spool, sender) on one node of the
fault tests' simulated fleet (tests/faults/fleet.py), paced in real time, so a test can SIGKILL it,
cut its network or fill its spool while it streams. SIGTERM stops it as it stops `flopwatch agent`.
With --start-ns left out the node starts measuring now, as a restarted agent does; the readings it
then signs are new ones, not the fleet's offline expectation.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from flopwatch.agent.config import AgentConfig
from flopwatch.agent.service import Agent
from flopwatch.cli.common import EXIT_RUNTIME, setup_logging
from flopwatch.errors import FlopwatchError
from tests.faults.fleet import CLUSTER, SimNode


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="agent_main", description=__doc__.splitlines()[0])
    p.add_argument("--collector", required=True, metavar="HOST:PORT")
    p.add_argument("--state-dir", type=Path, required=True, help="node key and spool")
    p.add_argument("--node-id", required=True)
    p.add_argument("--seed", type=int, required=True, help="simulator seed (names the GPUs)")
    p.add_argument("--start-ns", type=int, help="start of the first interval (default: now)")
    p.add_argument("--intervals", type=int, required=True, help="readings before the end")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.05, help="seconds per reading")
    p.add_argument("--intervals-per-record", type=int, default=1, help="readings per record")
    p.add_argument("--jobs", type=Path, required=True, help="JOBS.json")
    p.add_argument("--spool-max-bytes", type=int, default=64 << 20)
    p.add_argument("--spool-segment-bytes", type=int, default=32 << 20)
    p.add_argument("--ack-timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    setup_logging("INFO")
    start_ns = args.start_ns if args.start_ns is not None else time.time_ns()
    node = SimNode(args.node_id, args.seed, start_ns, args.intervals, args.gpus, args.interval)
    config = AgentConfig(
        collector=args.collector,
        backend=f"sim:{args.gpus}",
        state_dir=args.state_dir,
        node_id=args.node_id,
        cluster=CLUSTER,
        interval_s=args.interval,
        intervals_per_record=args.intervals_per_record,
        jobs_file=args.jobs,
        insecure=True,
        spool_max_bytes=args.spool_max_bytes,
        spool_segment_bytes=args.spool_segment_bytes,
        drain_timeout_s=args.drain_timeout,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        ack_timeout_s=args.ack_timeout,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return Agent(config, backend=node.backend(realtime=True)).run(stop)
    except FlopwatchError as e:
        print(f"agent_main: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
