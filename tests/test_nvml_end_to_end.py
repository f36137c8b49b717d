"""`flopwatch agent --backend nvml` on the real nvidia-ml-py over the NVML double, into a collector.

The double (tests/nvml_double) serves the H100 recording in accelerated real time; the agent runs
as its own process exactly as an operator starts it, and streams to a collector over gRPC. The
collector's per-job totals must match `flopwatch replay` of the same recording within the
tolerance derived in `tolerance` below: the same numbers through the real NVML path as through
replay, up to where the two sample the recording at different instants.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flopwatch.agent.replay_report import replay
from flopwatch.attribution import ALL_GPUS, JobWindow
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.server import CollectorService
from flopwatch.jobs_file import load_jobs
from flopwatch.model import Precision
from flopwatch.transport import query_stub, sync_channel
from flopwatch.v1 import collector_pb2
from tests.nvml_double.harness import TraceReference, double_env
from tests.paths import H100_TRACE, REPO

JOBS = H100_TRACE / "jobs.json"
# The part of the recording with jobs a1-a4 (bf16, fp8, tf32, fp16 products, one process) and
# c1+c2 (two processes sharing the GPU); the other phases are replayed in tests/test_end_to_end.py.
SLICE = (1795426233.0, 1795426281.0)
PHASES = (["a1"], ["a2"], ["a3"], ["a4"], ["c1", "c2"])
SPEED = 2.0  # trace seconds per real second: 48 recorded seconds in 24
INTERVAL_S = 0.15  # the agent's interval, real seconds (NVML: more than 0.1 s)
CLOCK_POLL_S = 0.1  # the agent's SM-clock poll period, real seconds (clock.DEFAULT_CLOCK_POLL_S)
START_DELAY_S = 2.0  # the recording starts this long after the agent does (its start-up)
# How late the agent's threads may wake, in real seconds, before the bound below no longer holds:
# a late wake-up makes one interval (and one clock gap) longer by that much.
SLACK_S = 0.05
NODE = "nvml-node"


def sliced_trace(path: Path) -> Path:
    """The recording's meta line and its intervals inside SLICE, as a trace file."""
    lines = (H100_TRACE / "trace.jsonl").read_text().splitlines()
    keep = [
        line
        for line in lines
        if json.loads(line)["type"] == "meta"
        or (SLICE[0] <= json.loads(line)["t0"] and json.loads(line)["t1"] <= SLICE[1])
    ]
    path.write_text("\n".join(keep) + "\n")
    return path


@dataclass(frozen=True)
class Bound:
    edges: float  # FLOPs an interval straddling two recorded intervals can move
    clock: float  # 3 standard deviations of the clock-sampling error, FLOPs


@dataclass(frozen=True)
class Recording:
    """The sliced recording and the replay's FLOPs per recorded interval at each precision."""

    trace: Path
    ref: TraceReference

    def flops(self, precision: Precision) -> list[int]:
        """The replay's FLOPs estimate of each recorded interval, whole GPU, at `precision`."""
        ns = [(round(iv["t0"] * 1e9), round(iv["t1"] * 1e9)) for iv in self.ref.intervals]
        windows = [
            JobWindow(f"k{k}", None, a, b, precision=precision, gpu=ALL_GPUS)
            for k, (a, b) in enumerate(ns)
        ]
        jobs = replay(self.trace, windows).jobs
        return [jobs[f"k{k}"].flops if f"k{k}" in jobs else 0 for k in range(len(ns))]

    def tolerance(self, window: JobWindow) -> Bound:
        """How far the agent's total for one job may lie from the replay's, and why.

        Both turn the same recorded readings into FLOPs (FLOPs = B x integral of the SM clock,
        B fixed by the pipes' busy fractions, the SM count and the rates); they differ only in
        where they cut time. The replay takes the recording's own intervals (about 1 s), each
        with busy fractions b_k and the mean of ~100 clock readings. The agent's intervals are
        L = SPEED x (INTERVAL_S + SLACK_S) trace seconds or shorter, placed wherever it started;
        the double serves each recorded interval's busy fractions over its whole second and the
        recorded clock reading of each instant. So:

        1. An agent interval inside one recorded interval sees its busy fractions exactly; job
           windows cut intervals pro rata in both (flopwatch.attribution) and the work is
           uniform inside a recorded interval in both views: no difference.
        2. An agent interval that straddles the boundary t between recorded intervals k and
           k+1, a fraction theta of it before t, computes b_mean x integral(c) where the replay
           has b_k x integral(c, before t) + b_k+1 x integral(c, after t). With a constant clock
           the two are equal; what differs is |B_k+1 - B_k| x theta (1 - theta) x L x (the
           difference of the clock's means on the two sides) <= |dB| x L/4 x (clock range over
           intervals k and k+1). If a job window's edge also lies within L of t, the agent
           splits that interval pro rata while the replay splits each side: then at most
           |dB| x L x (the highest clock) moves between the job and its neighbour.
        3. The agent integrates the clock from readings d = SPEED x (CLOCK_POLL_S + SLACK_S)
           trace seconds apart (trapezoid rule), the replay averages ~100 per interval. Each
           gap's integral is off by d x (reading - the gap's mean), an error with mean zero
           (the readings fall at instants unrelated to the clock's wiggles) and a standard
           deviation at most d x sd_k (sd_k: the spread of interval k's clock readings). The
           len_k / d gaps are independent; the test allows 3 standard deviations of the sum.
        Processes: the recording's per-process samples are served at their own instants, so a
        process's share of an agent interval can differ from its share of the recorded interval;
        jobs that shared the GPU (c1, c2) are compared as their sum, declared at one precision
        (`jobs_file`).
        """
        t0, t1 = window.start_ns / 1e9, (window.end_ns or 0) / 1e9
        step = SPEED * (INTERVAL_S + SLACK_S)
        gap = SPEED * (CLOCK_POLL_S + SLACK_S)
        flops = self.flops(window.precision)
        ivs = self.ref.intervals
        per_mhz_s = []  # B_k: FLOPs per MHz x second of interval k
        for k, iv in enumerate(ivs):
            clocks = iv["clock_polled_mhz"]
            per_mhz_s.append(flops[k] / (statistics.fmean(clocks) * (iv["t1"] - iv["t0"])))
        edges = var = 0.0
        for k, iv in enumerate(ivs):
            if iv["t1"] < t0 - step or iv["t0"] > t1 + step:
                continue
            clocks = iv["clock_polled_mhz"]
            length = iv["t1"] - iv["t0"]
            var += (length / gap) * (gap * per_mhz_s[k] * statistics.pstdev(clocks)) ** 2
            t = iv["t1"]
            if k + 1 == len(ivs) or not t0 - step <= t <= t1 + step:
                continue
            both = clocks + ivs[k + 1]["clock_polled_mhz"]
            d_b = abs(per_mhz_s[k + 1] - per_mhz_s[k])
            if min(abs(t - t0), abs(t - t1)) < step:
                edges += d_b * step * max(both)
            else:
                edges += d_b * step / 4 * (max(both) - min(both))
        return Bound(edges=edges, clock=3 * var**0.5)


def jobs_file(path: Path, shift: Callable[[float], float] = lambda t: t) -> Path:
    """The recording's JOBS.json, windows moved by `shift` (to the instants the double serves
    them at), with c2 declared at c1's precision.

    c1 and c2 shared the GPU, so how their work splits between them depends on which
    per-process samples fall into which interval, and the declared precision picks the rate at
    which each one's share of the HMMA pipe counts. Declared alike, their sum no longer depends
    on the split, and the sum is what the test compares.
    """
    rows = json.loads(JOBS.read_text())
    for row in rows:
        row["start"], row["end"] = shift(row["start"]), shift(row["end"])
        if row["job"] == "c2":
            row["precision"] = next(r["precision"] for r in rows if r["job"] == "c1")
    path.write_text(json.dumps(rows))
    return path


def list_jobs(port: int) -> dict[str, collector_pb2.JobTotal]:
    with sync_channel(f"127.0.0.1:{port}", insecure=True) as channel:
        answer = query_stub(channel).ListJobs(collector_pb2.ListJobsRequest(), timeout=10)
    return {j.job_id: j for j in answer.jobs}


def run_agent_on_the_double(tmp: Path, ref: TraceReference) -> dict[str, collector_pb2.JobTotal]:
    """Collector in process, `flopwatch agent --backend nvml` in its own process over the
    double; the collector's job totals once it holds the interval that covers the recording's
    end (the node's unattributed job has every interval's remainder): a condition, not a
    guessed sleep."""
    epoch = time.time() + START_DELAY_S
    jobs_file(tmp / "jobs.json", lambda t: ref.served(t, epoch, SPEED))
    end_ns = round(ref.served(ref.t1, epoch, SPEED) * 1e9)
    env = double_env(trace=tmp / "trace.jsonl", frozen=False, epoch=epoch, speed=SPEED)
    env["PYTHONPATH"] = str(REPO)
    unattributed = f"unattributed:test/{NODE}"

    async def scenario() -> dict[str, collector_pb2.JobTotal]:
        service = CollectorService(
            CollectorConfig(
                listen="127.0.0.1:0",
                db=f"sqlite:{tmp / 'c.db'}",
                metrics_listen=None,
                insecure=True,
                enroll_on_first_use=True,
            )
        )
        port, _ = await service.start()
        agent = subprocess.Popen(
            [
                *(sys.executable, "-m", "flopwatch", "agent", "--insecure"),
                *("--collector", f"127.0.0.1:{port}", "--node-id", NODE, "--cluster", "test"),
                *("--backend", "nvml", "--interval", str(INTERVAL_S)),
                *("--jobs", str(tmp / "jobs.json"), "--attribution", "none"),
                *("--control-socket", "off", "--metrics-listen", "off"),
                *("--state-dir", str(tmp / "agent")),
            ],
            env=env,
            stderr=(tmp / "agent.log").open("wb"),
        )
        try:
            deadline = time.monotonic() + 60 + (ref.t1 - ref.t0) / SPEED
            while True:
                jobs = await asyncio.to_thread(list_jobs, port)
                if unattributed in jobs and jobs[unattributed].last_end_unix_ns >= end_ns:
                    return jobs
                if agent.poll() is not None or time.monotonic() > deadline:
                    log = (tmp / "agent.log").read_text(errors="replace")
                    raise AssertionError(f"the agent did not cover the recording:\n{log}")
                await asyncio.sleep(0.2)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
            await service.stop()

    return asyncio.run(scenario())


def test_agent_on_real_pynvml_totals_match_replay(tmp_path: Path) -> None:
    trace = sliced_trace(tmp_path / "trace.jsonl")
    recording = Recording(trace, TraceReference.load(trace))
    got = run_agent_on_the_double(tmp_path, recording.ref)
    recorded_jobs = jobs_file(tmp_path / "jobs-recorded.json")
    windows = {w.job_id: w for w in load_jobs(recorded_jobs, source="replay")}
    expected = replay(recording.trace, list(windows.values())).jobs
    deviations = []
    for group in PHASES:
        # The agent integrates the SM clock over real seconds, and SPEED recorded seconds pass
        # in each: every figure it signs is the recording's divided by SPEED.
        have = SPEED * sum(int(got[j].flops_estimate) for j in group)
        want = sum(expected[j].flops for j in group)
        allowed = 0.0
        for j in group:
            bound = recording.tolerance(windows[j])
            allowed += bound.edges + bound.clock
        name = "+".join(group)
        deviations.append(f"{name}: {have / want - 1:+.4f} (allowed {allowed / want:.4f})")
        assert abs(have - want) <= allowed, deviations
        # the upper bound holds the estimate through the NVML path too
        assert sum(int(got[j].flops_upper) for j in group) * SPEED >= have
    print("\n".join(deviations))
