"""One fault test's world: a simulated fleet, its jobs, a collector and agents, under tmp_path.

The lab knows what the fleet signs when nothing goes wrong (`expected`), starts the processes
the test then hurts, and kills whatever is still running when the test ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from flopwatch.verify.record import VerifiedRecord
from tests.faults.evidence import held_records, node_keys, spooled_records
from tests.faults.fleet import (
    RunFigures,
    SimNode,
    Totals,
    account_totals,
    fleet,
    job_totals,
    run_totals,
    signed_offline,
    write_jobs,
)
from tests.faults.processes import AgentProcess, ChildProcess, CollectorProcess


def now_s_ns() -> int:
    """Now, rounded down to the second, in ns: where a test's fleet starts measuring."""
    return time.time_ns() // 10**9 * 10**9


class FaultLab:
    def __init__(self, root: Path, *, nodes: int = 3, intervals: int = 200) -> None:
        self.root = root
        self.nodes: list[SimNode] = fleet(nodes, now_s_ns(), intervals=intervals)
        first = self.nodes[0]
        span_s = first.intervals * first.interval_s
        self.jobs = root / "jobs.json"
        self.windows = write_jobs(self.jobs, first.start_ns, span_s)
        # What each node signs when nothing goes wrong; record k has sequence k + 1.
        self.offline: dict[str, list[VerifiedRecord]] = {
            n.node_id: signed_offline(n, self.windows) for n in self.nodes
        }
        self._procs: list[ChildProcess] = []

    @property
    def expected(self) -> Totals:
        """Per-job totals of every record the fleet signs in an uninterrupted run."""
        return job_totals(r for records in self.offline.values() for r in records)

    @property
    def expected_runs(self) -> dict[tuple[str, str], RunFigures]:
        """Per-run totals of the same records: the run spans two jobs on every node."""
        return run_totals(r for records in self.offline.values() for r in records)

    @property
    def expected_accounts(self) -> dict[str, RunFigures]:
        return account_totals(r for records in self.offline.values() for r in records)

    def collector(self, thresholds: Sequence[int] = ()) -> CollectorProcess:
        c = CollectorProcess(self.root / "collector.db", self.root / "collector.log", thresholds)
        self._procs.append(c)
        return c

    def agents(self, address: str, options: Sequence[str] = ()) -> list[AgentProcess]:
        out = []
        for n in self.nodes:
            a = AgentProcess(
                n,
                collector=address,
                state_dir=self.root / n.node_id,
                jobs=self.jobs,
                log=self.root / f"{n.node_id}.log",
                options=options,
            )
            self._procs.append(a)
            out.append(a)
        return out

    def state_dirs(self) -> list[Path]:
        return [self.root / n.node_id for n in self.nodes]

    def held(self, collector: CollectorProcess) -> list[VerifiedRecord]:
        """Every record the collector holds, verified with the agents' keys."""
        return held_records(collector.db, node_keys(self.state_dirs()))

    def spooled(self) -> list[VerifiedRecord]:
        """Every record the agents' spools hold, verified with their keys."""
        keys = node_keys(self.state_dirs())
        return [r for d in self.state_dirs() for r in spooled_records(d / "spool", keys)]

    def close(self) -> None:
        for p in self._procs:
            if p.running:
                p.kill()
