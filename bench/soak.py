"""Soak: many simulated nodes streaming live to one collector for minutes, with figures.

    .venv/bin/python bench/soak.py [--nodes 1000] [--gpus 8] [--interval 1]
        [--intervals-per-record 1] [--seconds 600]

What runs:
- One collector process: gRPC, SQLite in a temp dir, trust on first use, no TLS (the bench
  measures the collector's work, not the handshake), job thresholds out of reach (run and
  account thresholds at their defaults: the eu-ai-act and us-ca-sb53 presets, with forecasts).
- `--clients` client processes share the `--nodes` simulated nodes. Each node is one agent: its
  own Ed25519 key, its own Submit stream, its own hash chain. Every `--interval` x
  `--intervals-per-record` seconds each node signs one envelope covering that time for its
  `--gpus` H100s (busy tensor pipes), in `--intervals-per-record` intervals per GPU as an agent
  with that setting does, and sends it, live, with real timestamps. Nodes start spread over the
  first period.

What it prints, every `--report-every` seconds and at the end:
- throughput: GPU-interval records and envelopes acknowledged as accepted per second, next to
  the rate the nodes offer (nodes x GPUs / interval);
- ingest-to-visible latency, p50 / p99 / max: from the moment a node hands an envelope to gRPC
  to the moment its ACCEPTED ack arrives. The collector acks only after the record's commit,
  so at that moment the job totals include it (that is what "visible" means here);
- collector memory: resident set (VmRSS, the process and its verify workers together) now, at
  the end of warm-up, and its growth per minute after warm-up (the first `--warmup` seconds
  are left out of the growth figure);
- CPU: the collector's CPU seconds (process and verify workers) per wall second (cores busy),
  and the clients'.
At the end, envelopes sent, accepted, and anything not accepted (must be 0), and whether the
nodes kept their schedule (backlog: envelopes due but not yet sent).

All processes share this machine's cores: on a 2-core box the clients' signing competes with
the collector. The figures say what this box sustains, not what a dedicated collector would.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector_throughput import collector_main, cpu_seconds, process_tree

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.config import parse_verify_workers
from flopwatch.keys import SigningKey, public_raw
from flopwatch.model import Pipe, Precision
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2

S = 10**9
PID = 4242
NODES_PER_CHANNEL = 50  # one TCP connection per 50 nodes, as separate agents would have


class Node:
    """One simulated agent: key, chain, GPUs, and the send times of envelopes not yet acked."""

    def __init__(self, index: int, gpus: int, rounds: int = 1) -> None:
        self.rounds = rounds  # sampling intervals per envelope, like --intervals-per-record
        self.key = SigningKey.generate()
        self.builder = RecordBuilder(
            node_id=f"soak-node-{index}",
            cluster="soak",
            signer=self.key,
            head=ChainHead(),
            now_ns=time.time_ns,
        )
        self.gpus = [
            GpuInfo(f"GPU-soak-{index}-{i}", "NVIDIA H100 80GB HBM3", 132, (9, 0), 1980, index=i)
            for i in range(gpus)
        ]
        # Runs and accounts on: 16 jobs in 8 runs of 4 accounts, so every record also adds to
        # a run, an account and a UTC day of it (and to the run and account alerts' checks).
        self.windows = [
            JobWindow(
                f"slurm:soak/{index % 16}",
                PID,
                0,
                None,
                Precision.BF16,
                run=f"soak-run-{index % 8}",
                account=f"soak-account-{index % 4}",
            )
        ]
        self.sent_at: dict[int, float] = {}

    def envelope(self, start_ns: int, end_ns: int) -> tuple[int, bytes]:
        """One envelope over [start_ns, end_ns): `rounds` equal intervals of every GPU."""
        edges = [start_ns + (end_ns - start_ns) * k // self.rounds for k in range(self.rounds + 1)]
        rounds = [
            (
                [
                    GpuReading(
                        gpu=g,
                        start_ns=a,
                        end_ns=b,
                        pipe_busy={Pipe.HMMA: 0.6, Pipe.FP32: 0.05},
                        sm_clock_mhz_s=1755.0 * (b - a) / S,
                        clock_samples=10,
                        energy_mj=650 * (b - a) // 10**6,
                        processes=(ProcessShare(PID, 1.0),),
                    )
                    for g in self.gpus
                ],
                self.windows,
            )
            for a, b in itertools.pairwise(edges)
        ]
        envelope = self.builder.build_rounds(rounds)
        return self.builder.head.sequence, envelope.to_bytes()


class Tally:
    """What one client process saw since its last report (each report hands over and resets)."""

    def __init__(self) -> None:
        self.sent = self.accepted = self.other = self.behind = 0
        self.latencies: list[float] = []
        self.other_reasons: dict[str, int] = {}

    def take(self) -> dict[str, Any]:
        out = {
            "sent": self.sent,
            "accepted": self.accepted,
            "other": self.other,
            "behind": self.behind,
            "latencies": self.latencies,
            "reasons": dict(self.other_reasons),
        }
        self.sent = self.accepted = self.other = self.behind = 0
        self.latencies = []
        self.other_reasons = {}
        return out


async def run_node(
    stub: Any, node: Node, offset: float, interval: float, until: float, tally: Tally
) -> None:
    metadata = (("flopwatch-public-key", public_raw(node.key.public_key).hex()),)
    queue: asyncio.Queue[cpb.SubmitRequest | None] = asyncio.Queue()

    async def requests() -> Any:
        while (item := await queue.get()) is not None:
            yield item

    async def produce() -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + offset
        previous_end = time.time_ns() - int(interval * S)
        try:
            while due < until:
                await asyncio.sleep(max(0.0, due - loop.time()))
                if loop.time() - due > interval:
                    tally.behind += 1  # this node is more than one interval late
                end = time.time_ns()
                seq, data = node.envelope(previous_end, end)
                previous_end = end
                node.sent_at[seq] = time.perf_counter()
                request = cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))
                queue.put_nowait(request)
                tally.sent += 1
                due += interval
        finally:
            queue.put_nowait(None)  # ends the stream; a failure surfaces at `await producer`

    producer = asyncio.create_task(produce())
    async for response in stub.Submit(requests(), metadata=metadata):
        now = time.perf_counter()
        for ack in response.acks:
            sent = node.sent_at.pop(ack.sequence, None)
            if ack.status == cpb.ACK_STATUS_ACCEPTED:
                tally.accepted += 1
                if sent is not None:
                    tally.latencies.append(now - sent)
            else:
                tally.other += 1
                tally.other_reasons[ack.reason] = tally.other_reasons.get(ack.reason, 0) + 1
        if producer.done() and not node.sent_at:
            break
    await producer


def client_main(
    client: int,
    port: int,
    nodes: Sequence[int],
    gpus: int,
    rounds: int,
    interval: float,
    seconds: float,
    report_every: float,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    built = [Node(i, gpus, rounds) for i in nodes]
    period = interval * rounds  # seconds between one node's envelopes
    tally = Tally()

    async def reporter(until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(report_every)
            out.put(("report", client, tally.take()))

    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}",
                # distinct args: a connection of its own, not a shared subchannel
                options=[("grpc.use_local_subchannel_pool", 1), ("soak.channel", c)],
            )
            for c in range(0, len(built), NODES_PER_CHANNEL)
        ]
        for ch in channels:
            await ch.channel_ready()
        ready.put(client)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        stubs = [collector_pb2_grpc.CollectorStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
        spread = period / max(1, len(built))
        report = asyncio.create_task(reporter(until))
        await asyncio.gather(
            *(
                run_node(stubs[i // NODES_PER_CHANNEL], n, i * spread, period, until, tally)
                for i, n in enumerate(built)
            )
        )
        report.cancel()
        out.put(("final", client, tally.take()))
        for ch in channels:
            await ch.close()

    asyncio.run(main())


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its live children (the collector's verify workers)."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        total += sum(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
    return total / 1024


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds per interval (default 1)")
    p.add_argument(
        "--intervals-per-record",
        type=int,
        default=1,
        metavar="N",
        help="intervals per envelope, as agents with --intervals-per-record N sign (default 1)",
    )
    p.add_argument("--seconds", type=float, default=600, help="how long to stream (default 600)")
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--warmup", type=float, default=60, help="seconds before memory growth counts")
    p.add_argument("--report-every", type=float, default=30, help="progress line period (s)")
    p.add_argument(
        "--verify-workers",
        default="auto",
        metavar="N",
        help="the collector's --verify-workers (default auto: one per CPU, at most 4)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    per_envelope = args.gpus * args.intervals_per_record  # GPU-intervals in one envelope
    offered = args.nodes * args.gpus / args.interval
    print(
        f"flopwatch soak: {args.nodes} nodes x {args.gpus} GPUs, one envelope per node every "
        f"{args.interval * args.intervals_per_record:g} s holding {args.intervals_per_record} "
        f"interval(s) of {args.interval:g} s ({offered:,.0f} GPU-interval records/s offered), "
        f"{args.seconds:g} s, {args.clients} client processes, {os.cpu_count()} CPUs, "
        f"collector --verify-workers {args.verify_workers}, Python {sys.version.split()[0]}"
    )
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        ports, ready, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
        stop, go = ctx.Event(), ctx.Event()
        db = str(Path(tmp) / "c.db")
        workers = parse_verify_workers(args.verify_workers)
        collector = ctx.Process(target=collector_main, args=(db, ports, stop, None, workers))
        collector.start()
        port = ports.get(timeout=60)
        shares = [list(range(c, args.nodes, args.clients)) for c in range(args.clients)]
        procs = [
            ctx.Process(
                target=client_main,
                args=(
                    c,
                    port,
                    shares[c],
                    args.gpus,
                    args.intervals_per_record,
                    args.interval,
                    args.seconds,
                    args.report_every,
                    ready,
                    go,
                    out,
                ),
            )
            for c in range(args.clients)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=600)
        assert collector.pid is not None
        cpid = collector.pid
        start = time.monotonic()
        cpu0 = cpu_seconds(cpid)
        client_cpu0 = sum(cpu_seconds(p.pid) for p in procs if p.pid is not None)
        go.set()

        totals = {"sent": 0, "accepted": 0, "other": 0, "behind": 0}
        reasons: dict[str, int] = {}
        all_latencies: list[float] = []
        window: list[float] = []
        window_accepted = 0
        window_start = start
        rss_warm: tuple[float, float] | None = None
        rss_peak = 0.0
        finals = 0
        print(
            f"{'t (s)':>6} {'GPU-int/s':>10} {'env/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'RSS MB':>7} {'cores':>6}"
        )
        last_cpu, last_t = cpu0, start
        reports = 0
        while finals < len(procs):
            try:
                kind, _client, t = out.get(timeout=5)
            except queue.Empty:
                failed = [p.exitcode for p in [*procs, collector] if p.exitcode]
                if failed:
                    sys.exit(f"soak: a process failed (exit codes {failed}); see its traceback")
                continue
            for k in totals:
                totals[k] += t[k]
            for r, n in t["reasons"].items():
                reasons[r] = reasons.get(r, 0) + n
            all_latencies.extend(t["latencies"])
            window.extend(t["latencies"])
            window_accepted += t["accepted"]
            finals += kind == "final"
            reports += 1
            if reports % len(procs) or kind == "final":
                continue
            now = time.monotonic()
            rss = rss_mb(cpid)
            rss_peak = max(rss_peak, rss)
            if rss_warm is None and now - start >= args.warmup:
                rss_warm = (now, rss)
            cpu = cpu_seconds(cpid)
            window.sort()
            rate = window_accepted * per_envelope / (now - window_start)
            print(
                f"{now - start:>6.0f} {rate:>10,.0f} "
                f"{window_accepted / (now - window_start):>7,.0f} "
                f"{percentile(window, 0.5) * 1e3:>8.1f} {percentile(window, 0.99) * 1e3:>8.1f} "
                f"{rss:>7.1f} {(cpu - last_cpu) / (now - last_t):>6.2f}",
                flush=True,
            )
            window, window_accepted, window_start = [], 0, now
            last_cpu, last_t = cpu, now

        wall = time.monotonic() - start
        cpu1 = cpu_seconds(cpid)
        client_cpu1 = sum(cpu_seconds(p.pid) for p in procs if p.pid is not None)
        rss_end = rss_mb(cpid)
        rss_peak = max(rss_peak, rss_end)
        for proc in procs:
            proc.join()
        stop.set()
        collector.join(timeout=60)

    all_latencies.sort()
    lat = [percentile(all_latencies, q) * 1e3 for q in (0.5, 0.99)]
    print("\nsummary")
    print(f"  wall                                  {wall:,.1f} s")
    print(
        f"  envelopes sent / accepted / other     {totals['sent']:,} / {totals['accepted']:,} / "
        f"{totals['other']:,} {reasons or ''}"
    )
    print(
        f"  accepted GPU-interval records/s       {totals['accepted'] * per_envelope / wall:,.0f} "
        f"(offered {offered:,.0f})"
    )
    print(f"  accepted envelopes/s                  {totals['accepted'] / wall:,.0f}")
    print(
        f"  ingest-to-visible latency             p50 {lat[0]:.1f} ms, p99 {lat[1]:.1f} ms, "
        f"max {all_latencies[-1] * 1e3 if all_latencies else float('nan'):.1f} ms"
    )
    if rss_warm is not None:
        minutes = (wall - (rss_warm[0] - start)) / 60
        growth = (rss_end - rss_warm[1]) / minutes if minutes > 0 else float("nan")
        print(
            f"  collector RSS                         {rss_warm[1]:.1f} MB after warm-up, "
            f"{rss_end:.1f} MB at end, peak {rss_peak:.1f} MB, growth {growth:+.2f} MB/min"
        )
    else:
        print(f"  collector RSS                         {rss_end:.1f} MB at end (run < warm-up)")
    print(
        f"  CPU                                   collector {(cpu1 - cpu0) / wall:.2f} cores, "
        f"clients {(client_cpu1 - client_cpu0) / wall:.2f} cores"
    )
    print(
        f"  schedule                              {totals['behind']:,} envelopes sent more than "
        f"one interval late"
    )
    if totals["other"] or totals["accepted"] != totals["sent"]:
        sys.exit("soak: not every envelope sent was accepted")


if __name__ == "__main__":
    main()
