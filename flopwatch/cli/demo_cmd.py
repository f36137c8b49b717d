"""`flopwatch demo`: an embedded collector (SQLite) and two agents replaying a real H100 trace.

The trace is split in time across two node ids (`demo-node-1` replays its first part,
`demo-node-2` the rest, at once), and the jobs file gains runs and accounts (`DEMO_LABELS`): the
run `llm-demo` of account `acme` is one job on each node (a training job restarted on another
node), so its total spans both; job g1 is run `llm-demo-ft` (fine-tuning), whose jobs-file
entry names its parent run `llm-demo`: its records carry the parent, and the collector declares
the lineage from them (signed, logged; the code of `flopwatch runs declare`), so its cumulative
compute adds its parent's and the EU derived-run rule is decided as it runs. Shows FLOPs per
job growing as the replay streams in, a job threshold alert firing at a lowered threshold, the
run alerts at lowered run thresholds (a forecast among them: the demo's runs last seconds, so
the forecast's least span is lowered to a second, for the demo only; the derived-run alert),
and at the end the lineage and the `flopwatch runs` and `flopwatch accounts` tables. Everything runs
on loopback in one process, in a scratch directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flopwatch.cli import accounts_cmd, runs_cmd, runs_lineage_cmd
from flopwatch.cli.common import EXIT_FAILED, EXIT_OK
from flopwatch.cli.jobs_cmd import table
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.transport import query_stub
from flopwatch.v1 import collector_pb2

HELP = (
    "run a collector and two agents replaying a recorded H100 trace, and watch FLOPs per job, "
    "run and account"
)
DEFAULT_TRACE = Path("tests/fixtures/h100-trace-1")
NODES = ("demo-node-1", "demo-node-2")
RESTARTED_AS = "t1"  # the job that resumes run llm-demo; the second node replays from its start
DERIVED_RUN = "llm-demo-ft"  # job g1: a fine-tuning of llm-demo, its records name it its parent
DEMO_FORECAST_MIN_SPAN_S = 1.0  # the demo's runs last seconds (the collector's default: an hour)
# Runs, accounts and classes the demo gives the bundled trace's jobs (jobs.json fields): c1 on
# the first node and t1 on the second are one run, restarted; the other jobs are runs of their
# own, in two accounts. Jobs of another trace that are not named here keep what their file says.
DEMO_LABELS: dict[str, dict[str, str]] = {
    "c1": {"run": "llm-demo", "account": "acme", "class": "pretraining"},
    "t1": {"run": "llm-demo", "account": "acme", "class": "pretraining"},
    "f1": {"account": "acme", "class": "evaluation"},
    "f2": {"account": "acme", "class": "evaluation"},
    "g1": {"run": DERIVED_RUN, "account": "acme", "class": "fine-tuning", "parent": "llm-demo"},
    **{j: {"account": "lab-b"} for j in ("a1", "a2", "a3", "a4", "c2")},
}


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
        help="FLOP threshold for the demo's job alert, lowered from the 1e25/1e26 defaults",
    )
    p.add_argument(
        "--run-thresholds",
        default="eu-ai-act,1e17",
        help="run thresholds (cumulative compute), lowered so that a forecast fires within the "
        "14-day horizon at the demo's rates (default: %(default)s)",
    )
    p.set_defaults(run=run)


def split_trace(trace: Path, out: Path, at_s: float | None) -> list[Path]:
    """Write the trace as two, one per demo node (the metadata line in both): intervals that
    end by `at_s` (unix seconds; None: the middle interval) and the rest. They replay at once."""
    lines = trace.read_text().splitlines()
    meta = [ln for ln in lines if json.loads(ln).get("type") != "interval"]
    intervals = [ln for ln in lines if json.loads(ln).get("type") == "interval"]
    if at_s is None:
        cut = len(intervals) // 2
    else:
        cut = sum(1 for ln in intervals if json.loads(ln)["t1"] <= at_s)
    parts = []
    for n, chunk in enumerate((intervals[:cut], intervals[cut:]), 1):
        path = out / f"trace-{n}.jsonl"
        path.write_text("\n".join(meta + chunk) + "\n")
        parts.append(path)
    return parts


def restart_time(jobs: Path) -> float | None:
    """When the demo's restarted job (`RESTARTED_AS`) starts, if the jobs file has it."""
    for item in json.loads(jobs.read_text()):
        if isinstance(item, dict) and item.get("job") == RESTARTED_AS:
            start = item.get("start")
            return float(start) if isinstance(start, int | float) else None
    return None


def labelled_jobs(jobs: Path, out: Path) -> Path:
    """The jobs file with `DEMO_LABELS` added to the jobs it names."""
    items = json.loads(jobs.read_text())
    for item in items:
        if isinstance(item, dict):
            item.update(DEMO_LABELS.get(str(item.get("job")), {}))
    path = out / "jobs.json"
    path.write_text(json.dumps(items, indent=1))
    return path


def show_lineage(db: Path) -> int:
    """`flopwatch runs lineage llm-demo-ft`: the lineage the collector declared from g1's
    records."""
    args = argparse.Namespace(
        db=f"sqlite:{db}", key=None, run_name=DERIVED_RUN, account="acme", json=False
    )
    return runs_lineage_cmd.run_lineage(args)


def run_alerts(db: Path) -> list[str]:
    """The run alerts the collector recorded, as its log and webhook summarise them."""
    from flopwatch.collector.alerts.events import describe_scope_alert
    from flopwatch.collector.store.factory import open_store

    store = open_store(f"sqlite:{db}")
    try:
        fired = store.fired_scope_alerts()
    finally:
        store.close()
    return [str(describe_scope_alert(a)["summary"]) for a in fired if a.scope == "run"]


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
    from flopwatch.collector.alerts.scopes import parse_rules
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
            run_thresholds=parse_rules(args.run_thresholds),
            forecast_min_span_s=DEMO_FORECAST_MIN_SPAN_S,
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
    parts = split_trace(trace, scratch, restart_time(jobs))
    jobs = labelled_jobs(jobs, scratch)
    print(
        f"agents {NODES[0]} and {NODES[1]} replay {trace}, split in time, at {args.speed:g}x; "
        f"alert threshold {args.threshold} FLOPs; run llm-demo (account acme) is job c1 on "
        f"{NODES[0]} restarted as job t1 on {NODES[1]}\n"
    )
    result: list[int] = []
    agents = []
    for node, part in zip(NODES, parts, strict=True):
        config = AgentConfig(
            collector=target,
            backend=f"replay:{part}",
            state_dir=scratch / node,
            node_id=node,
            cluster="demo",
            jobs_file=jobs,
            replay_speed=args.speed,
            insecure=True,
        )
        agents.append(
            threading.Thread(
                target=lambda c=config: result.append(run_agent(c)), name=node, daemon=True
            )
        )
    for agent in agents:
        agent.start()
    seen_alerts: set[tuple[str, str]] = set()
    with grpc.insecure_channel(target) as channel:
        stub = query_stub(channel)
        while True:
            done = not any(a.is_alive() for a in agents)
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
            next(a for a in agents if a.is_alive()).join(timeout=2.0)
        print(
            f"Lineage (`flopwatch runs lineage {DERIVED_RUN}`), declared by the collector from "
            "job g1's records, which name parent run llm-demo:"
        )
        if show_lineage(scratch / "collector.db") != EXIT_OK:
            result.append(EXIT_FAILED)
        print("\nRun alerts (run thresholds " + args.run_thresholds + ", cumulative compute):")
        alerts = run_alerts(scratch / "collector.db")
        for line in [a for a in alerts if "(account acme)" in a]:
            print("ALERT:", line)
        print(f"({len(alerts)} run alert(s) in all; those of account acme shown)")
        print(
            "\nRuns (`flopwatch runs`): llm-demo spans jobs c1 and t1 on two nodes; "
            f"{DERIVED_RUN}'s CUMULATIVE adds llm-demo's"
        )
        print(runs_cmd.table(runs_cmd.fetch_runs(stub, target, None, "")), "\n")
        print("Accounts (`flopwatch accounts`), with their trailing windows")
        print(accounts_cmd.table(accounts_cmd.fetch_accounts(stub, target, "")))
    collector.stop()
    print(f"\n{len(seen_alerts)} alert(s). Scratch files in {scratch}.")
    return EXIT_OK if result == [0] * len(agents) else EXIT_FAILED
