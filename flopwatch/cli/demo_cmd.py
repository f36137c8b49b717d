"""`flopwatch demo`: an embedded collector (SQLite) and an agent replaying a real H100 trace.

Shows FLOPs per job growing as the replay streams in, and a threshold alert firing at a lowered
threshold. Everything runs on loopback in one process, in a scratch directory.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK
from flopwatch.cli.jobs_cmd import table
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.transport import query_stub
from flopwatch.v1 import collector_pb2

HELP = "run a collector and an agent replaying a recorded H100 trace, and watch FLOPs per job"
DEFAULT_TRACE = Path("tests/fixtures/h100-trace-1")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("demo", help=HELP, description=HELP + ".")
    p.add_argument(
        "--trace-dir",
        type=Path,
        default=DEFAULT_TRACE,
        help="folder with trace.jsonl and jobs.json (default: %(default)s)",
    )
    p.add_argument("--speed", type=float, default=10.0, help="replay speed (default 10x)")
    p.add_argument(
        "--threshold",
        default="1e16",
        help="FLOP threshold for the demo alert, lowered from the 1e25/1e26 defaults",
    )
    p.set_defaults(run=run)


class _EmbeddedCollector:
    """Runs the collector's asyncio server on a thread of its own."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="collector", daemon=True)

    def _main(self) -> None:
        from flopwatch.collector.server import run_collector

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(port: int, metrics_port: int | None) -> None:
                self.port, self.metrics_port = port, metrics_port
                self._ready.set()

            await run_collector(self._config, ready=ready, stop=self._stop)

        try:
            asyncio.run(serve())
        except FlopwatchError as e:
            self.error = e
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def run(args: argparse.Namespace) -> int:
    import grpc

    from flopwatch.agent.config import AgentConfig
    from flopwatch.agent.service import run_agent
    from flopwatch.cli.collector_cmd import parse_thresholds
    from flopwatch.collector.config import CollectorConfig

    trace, jobs = args.trace_dir / "trace.jsonl", args.trace_dir / "jobs.json"
    for f in (trace, jobs):
        if not f.is_file():
            raise ConfigError(f"{f} not found (run from the repository root or pass --trace-dir)")
    scratch = Path(tempfile.mkdtemp(prefix="flopwatch-demo-"))
    collector = _EmbeddedCollector(
        CollectorConfig(
            listen="127.0.0.1:0",
            db=f"sqlite:{scratch / 'collector.db'}",
            metrics_listen="127.0.0.1:0",
            thresholds=parse_thresholds(args.threshold),
            insecure=True,
            enroll_on_first_use=True,
        )
    )
    collector.start()
    target = f"127.0.0.1:{collector.port}"
    print(
        f"collector on {target} (SQLite {scratch / 'collector.db'}), metrics on "
        f"http://127.0.0.1:{collector.metrics_port}/metrics"
    )
    print(f"agent replays {trace} at {args.speed:g}x; alert threshold {args.threshold} FLOPs\n")
    agent_config = AgentConfig(
        collector=target,
        backend=f"replay:{trace}",
        state_dir=scratch / "agent",
        node_id="demo-node",
        cluster="demo",
        jobs_file=jobs,
        replay_speed=args.speed,
        insecure=True,
    )
    result: list[int] = []
    agent = threading.Thread(
        target=lambda: result.append(run_agent(agent_config)), name="agent", daemon=True
    )
    agent.start()
    seen_alerts: set[tuple[str, str]] = set()
    with grpc.insecure_channel(target) as channel:
        stub = query_stub(channel)
        while True:
            done = not agent.is_alive()
            resp: collector_pb2.ListJobsResponse = stub.ListJobs(
                collector_pb2.ListJobsRequest(), timeout=10
            )
            print(time.strftime("%H:%M:%S"), "FLOPs per job so far:")
            print(table(resp), "\n")
            for j in resp.jobs:
                for t in j.thresholds_crossed:
                    if (j.job_id, t) not in seen_alerts:
                        seen_alerts.add((j.job_id, t))
                        print(
                            f"ALERT: job {j.job_id} crossed {int(t):.0e} FLOPs "
                            f"({'upper bound' if resp.alert_basis == 'upper' else 'estimate'})"
                        )
            if done:
                break
            agent.join(timeout=2.0)
    collector.stop()
    print(f"\n{len(seen_alerts)} alert(s). Scratch files in {scratch}.")
    return EXIT_OK if result == [0] else EXIT_FAILED
