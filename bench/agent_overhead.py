"""Agent overhead: CPU and memory of the real `flopwatch agent` process on 8 simulated GPUs.

    .venv/bin/python bench/agent_overhead.py [--seconds 60] [--gpus 8] [--interval 1]
        [--intervals-per-record 1] [--profile]

What it does, in order, and what each figure means:

1. Starts a collector in its own process on loopback (`--insecure`, SQLite in a temp dir, trust
   on first use, gRPC and /metrics on free ports it reports in its log).
2. Starts the agent in its own process exactly as an operator would: `flopwatch agent --backend
   sim:N --interval S --insecure`, so it samples (simulated readings, paced in real time: the
   simulator sleeps until each interval's end), attributes, signs, writes every record to its
   spool with fsync and streams it to the collector.
3. After `--warmup` seconds (imports, key creation, first connection: reported apart as startup
   CPU), reads the agent's CPU time (utime + stime of all its threads, /proc/PID/stat) at the
   start and the end of `--seconds`, and prints CPU seconds per wall second as % of one core.
4. Prints the agent's peak resident memory (VmHWM, /proc/PID/status) and the records the
   collector accepted (its flopwatch_records_accepted counter), which shows the agent did the
   work measured.

Targets (issue 3): under 0.5 % of one core for 8 GPUs at 1 s, under 80 MB peak RSS; `--check`
exits 1 when a target is missed. `--profile` runs the agent under cProfile and prints where its
time went (the CPU figure then includes the profiler's own cost). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

TARGET_CPU_PERCENT = 0.5
TARGET_RSS_MB = 80.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_SERVING = re.compile(r"collector serving gRPC on port (\d+), metrics on (\d+)")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system CPU seconds of every thread of the process
    wall_s: float  # monotonic seconds when read


def usage(pid: int) -> Usage:
    """CPU time of a process so far, from /proc/PID/stat (fields 14 and 15, clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    ticks = int(fields[11]) + int(fields[12])
    return Usage(ticks / os.sysconf("SC_CLK_TCK"), time.monotonic())


def status_kb(pid: int, key: str) -> int:
    """A kB figure from /proc/PID/status (VmHWM: peak resident set; VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def wait_for_ports(log: Path, proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """The collector's gRPC and metrics ports, from its log line, within READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        match = _SERVING.search(log.read_text(errors="replace"))
        if match:
            return int(match[1]), int(match[2])
        if proc.poll() is not None:
            raise RuntimeError(f"the collector exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"the collector did not start within {READY_TIMEOUT_S} s")


def accepted(metrics_port: int) -> float:
    """The collector's count of records accepted (sum over its label sets)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flopwatch_records_accepted")
        and not line.startswith("#")
        and "_created" not in line.split(" ", 1)[0]
    )


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        print(f"warning: {name} did not stop on SIGTERM within {STOP_TIMEOUT_S} s; killed")


def flopwatch_cmd(*args: str, profile_to: Path | None = None) -> list[str]:
    prefix = [sys.executable]
    if profile_to is not None:
        prefix += ["-m", "cProfile", "-o", str(profile_to)]
    return [*prefix, "-m", "flopwatch", *args]


def start_collector(root: Path, log: Path) -> subprocess.Popen[bytes]:
    """A local collector on free ports (plain gRPC, SQLite in `root`, nodes enrolled on first
    use), logging to `log`; `wait_for_ports(log, proc)` says where it listens."""
    return subprocess.Popen(
        flopwatch_cmd(
            "collector",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--db",
            f"sqlite:{root / 'collector.db'}",
            "--insecure",
            "--enroll-on-first-use",
        ),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def print_profile(path: Path, top: int = 25) -> None:
    import pstats  # noqa: PLC0415 (only with --profile)

    if not path.exists():
        print("no profile written (the agent did not exit cleanly)")
        return
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    p.add_argument("--gpus", type=int, default=8, help="simulated GPUs (default 8)")
    p.add_argument("--interval", type=float, default=1.0, help="agent interval, s (default 1)")
    p.add_argument(
        "--intervals-per-record",
        type=int,
        default=1,
        metavar="N",
        help="sampling rounds the agent signs together in one record (default 1)",
    )
    p.add_argument("--profile", action="store_true", help="run the agent under cProfile")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `flopwatch agent` (repeat), e.g. --agent-arg=--metrics-listen"
        " --agent-arg=off to measure without the Prometheus endpoint",
    )
    args = p.parse_args(argv)
    if (
        min(args.seconds, args.interval) <= 0
        or args.warmup < 0
        or min(args.gpus, args.intervals_per_record) < 1
    ):
        p.error(
            "--seconds and --interval must be positive, --gpus and --intervals-per-record at "
            "least 1"
        )

    with tempfile.TemporaryDirectory(prefix="flopwatch-bench-") as tmp:
        root = Path(tmp)
        clog, alog = root / "collector.log", root / "agent.log"
        collector = start_collector(root, clog)
        agent: subprocess.Popen[bytes] | None = None
        profile = root / "agent.prof" if args.profile else None
        try:
            grpc_port, metrics_port = wait_for_ports(clog, collector)
            started = time.monotonic()
            agent = subprocess.Popen(
                flopwatch_cmd(
                    "agent",
                    "--collector",
                    f"127.0.0.1:{grpc_port}",
                    "--backend",
                    f"sim:{args.gpus}",
                    "--interval",
                    str(args.interval),
                    "--intervals-per-record",
                    str(args.intervals_per_record),
                    "--state-dir",
                    str(root / "agent"),
                    "--node-id",
                    "bench-node",
                    "--insecure",
                    *args.agent_arg,
                    profile_to=profile,
                ),
                stdout=subprocess.DEVNULL,
                stderr=alog.open("wb"),
            )
            time.sleep(args.warmup)
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode}:\n{alog.read_text()}")
            before, records_before = usage(agent.pid), accepted(metrics_port)
            time.sleep(args.seconds)
            after, records_after = usage(agent.pid), accepted(metrics_port)
            hwm_kb, rss_kb = status_kb(agent.pid, "VmHWM"), status_kb(agent.pid, "VmRSS")
        finally:
            if agent is not None:
                stop(agent, "agent")
            stop(collector, "collector")

        cpu_percent = 100.0 * (after.cpu_s - before.cpu_s) / (after.wall_s - before.wall_s)
        peak_mb = hwm_kb / 1024
        print(
            f"flopwatch agent overhead: backend sim:{args.gpus}, interval {args.interval:g} s, "
            f"{args.intervals_per_record} interval(s) per record, "
            f"{after.wall_s - before.wall_s:.1f} s measured after {before.wall_s - started:.1f} s"
        )
        print(
            f"  CPU:       {cpu_percent:.3f} % of one core "
            f"({after.cpu_s - before.cpu_s:.2f} CPU s; target < {TARGET_CPU_PERCENT} %)"
        )
        print(
            f"  peak RSS:  {peak_mb:.1f} MB (VmHWM; now {rss_kb / 1024:.1f} MB; target < "
            f"{TARGET_RSS_MB:.0f} MB)"
        )
        print(f"  startup:   {before.cpu_s:.2f} CPU s in the first {before.wall_s - started:.1f} s")
        print(
            f"  records:   {records_after - records_before:.0f} accepted by the collector while "
            f"measured ({args.gpus * args.intervals_per_record} GPU-intervals each), "
            f"{records_after:.0f} in all"
        )
        if profile is not None:
            print("  (under cProfile: the CPU figure includes the profiler's cost)")
            print_profile(profile)
        missed = cpu_percent >= TARGET_CPU_PERCENT or peak_mb >= TARGET_RSS_MB
        if records_after <= records_before:
            print("error: the collector accepted no record while measuring")
            return 1
        return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
