"""Collector and agent processes for the fault tests, and waiting on what they do.

Every process is a real one (so SIGKILL means what it means in production), logs to its own
file under tmp_path and is killed when the test ends, whatever happened. Nothing here sleeps
for a guessed time: starts wait on the process's own log line (tests/faults/waits.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import grpc

from flopwatch.transport import query_stub
from flopwatch.v1 import collector_pb2
from tests.faults.fleet import RunFigures, SimNode, Totals
from tests.faults.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(r"collector serving gRPC on port (\d+)")


class ChildProcess:
    """A child process whose stderr and stdout go to `log` (appended across restarts)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.starts = 0

    def _spawn(self, argv: Sequence[str]) -> None:
        assert not self.running, "already running"
        self._out = self.log.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT
        )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def failed(self) -> bool:
        """It ended by itself with a non-zero exit code (not killed by the test)."""
        return self._proc is not None and self._proc.poll() not in (None, 0)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        self._end(signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.log.name}: still running after {timeout:.0f}s\n{self.tail()}"
            ) from None
        if self._out is not None:
            self._out.close()
            self._out = None
        return code

    def _end(self, sig: int, timeout: float = 30.0) -> int:
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            os.kill(self._proc.pid, sig)
        code = self.wait(timeout)
        self._proc = None
        return code

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


class CollectorProcess(ChildProcess):
    """`flopwatch collector` on SQLite, plaintext on loopback, trusting keys on first use.

    The first start binds a free port; every restart binds the same one, on the same database.
    """

    def __init__(self, db: Path, log: Path, thresholds: Sequence[int]) -> None:
        super().__init__(log)
        self.db = db
        self.thresholds = tuple(thresholds)
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> int:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self._spawn(
            [
                "-m",
                "flopwatch",
                "collector",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--db",
                f"sqlite:{self.db}",
                "--metrics-listen",
                "off",
                "--insecure",
                "--enroll-on-first-use",
                *(["--thresholds", ",".join(map(str, self.thresholds))] if self.thresholds else []),
            ]
        )

        def ready() -> int | None:
            if not self.running:
                raise AssertionError(f"collector exited during start:\n{self.tail()}")
            found = _READY.search(self.text()[offset:])
            return int(found.group(1)) if found else None

        self.port = wait_until(ready, "the collector to serve", timeout)
        return self.port


class AgentProcess(ChildProcess):
    """One simulated node (tests/faults/agent_main.py) streaming to `collector`."""

    def __init__(
        self,
        node: SimNode,
        *,
        collector: str,
        state_dir: Path,
        jobs: Path,
        log: Path,
        options: Sequence[str] = (),
    ) -> None:
        super().__init__(log)
        self.node = node
        self.collector = collector
        self.state_dir = state_dir
        self.jobs = jobs
        self.options = tuple(options)

    def start(self, *, resume: bool = False) -> None:
        """Start the node's run; `resume` starts measuring now, as a restarted agent does."""
        n = self.node
        argv = [
            "-m",
            "tests.faults.agent_main",
            "--collector",
            self.collector,
            "--state-dir",
            str(self.state_dir),
            "--node-id",
            n.node_id,
            "--seed",
            str(n.seed),
            "--intervals",
            str(n.intervals),
            "--gpus",
            str(n.gpus),
            "--interval",
            str(n.interval_s),
            "--jobs",
            str(self.jobs),
            *self.options,
        ]
        self._spawn(argv if resume else [*argv, "--start-ns", str(n.start_ns)])


class CliAgent(ChildProcess):
    """`flopwatch agent` itself (its command line and environment handling) on the simulator,
    plaintext, without control socket or metrics."""

    def start(self, collector: str, state_dir: Path, node_id: str, gpus: int = 1) -> None:
        self._spawn(
            [
                "-m",
                "flopwatch",
                "agent",
                "--collector",
                collector,
                "--backend",
                f"sim:{gpus}",
                "--interval",
                "0.05",
                "--node-id",
                node_id,
                "--state-dir",
                str(state_dir),
                "--control-socket",
                "off",
                "--metrics-listen",
                "off",
                "--insecure",
            ]
        )


class Progress:
    """How far the collector has got, from its public API (ListJobs): GPU-interval
    contributions committed, summed over jobs; None while it does not answer."""

    def __init__(self, address: str) -> None:
        # Reconnect at once after a collector restart, not after gRPC's default backoff.
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 250),
            ],
        )
        self._stub = query_stub(self._channel)

    def __call__(self) -> int | None:
        try:
            resp = self._stub.ListJobs(collector_pb2.ListJobsRequest(), timeout=2)
        except grpc.RpcError:
            return None
        return sum(int(j.gpu_intervals) for j in resp.jobs)

    def close(self) -> None:
        self._channel.close()


def committed(
    progress: Progress, at_least: int, agents: Sequence[AgentProcess]
) -> Callable[[], int | None]:
    """A `wait_until` condition: the contributions committed once they reach `at_least`.
    Fails at once, with its log, if an agent died instead of finishing."""

    def check() -> int | None:
        for a in agents:
            if a.failed:
                raise AssertionError(f"agent {a.node.node_id} failed:\n{a.tail()}")
        p = progress()
        return p if p is not None and p >= at_least else None

    return check


def jobs_json(address: str) -> Totals:
    """The FLOP totals per job (estimate and upper bound, exact) `flopwatch jobs --json`
    prints."""
    out = subprocess.run(
        [sys.executable, "-m", "flopwatch", "jobs", "--collector", address, "--insecure", "--json"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    jobs = json.loads(out)["jobs"]
    return {j: {k: int(v[k]) for k in ("flops", "flops_upper")} for j, v in jobs.items()}


def _cli_json(address: str, command: str) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flopwatch",
            command,
            "--collector",
            address,
            "--insecure",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


_FIGURES = ("flops", "flops_upper", "gpu_seconds", "energy_kwh")


def runs_json(address: str) -> dict[tuple[str, str], RunFigures]:
    """Per (account, run): FLOPs, GPU-seconds and energy, as `flopwatch runs --json` prints."""
    runs = _cli_json(address, "runs")["runs"]
    assert isinstance(runs, list)
    return {(r["account"], r["run"]): {k: r[k] for k in _FIGURES} for r in runs}


def accounts_json(address: str) -> dict[str, RunFigures]:
    """Per account: the all-time figures and those of its shortest window (the fault tests'
    records are minutes old: every window holds them all), as `flopwatch accounts --json`."""
    accounts = _cli_json(address, "accounts")["accounts"]
    assert isinstance(accounts, list)
    out = {}
    for a in accounts:
        all_time = {k: a["all_time"][k] for k in _FIGURES}
        assert {k: a["windows"][0][k] for k in _FIGURES} == all_time, a
        out[a["account"]] = all_time
    return out
