"""Collector throughput: signed GPU-interval records per second, verified, aggregated, committed.

    .venv/bin/python bench/collector_throughput.py [--clients 2] [--nodes 32] [--records 100]
        [--gpus 8] [--intervals 1]

What it does, in order, and what each figure means:

1. Raw Ed25519: verifications per second of one representative envelope's signature (PAE of an
   8-GPU attestation), on one core, in this process. The ceiling for signature checking alone.
2. Stages in process (no gRPC): per envelope, the time to parse + check the signature, to run the
   whole record verifier (parse, signature, limits, recompute every FLOP figure), and to ingest
   it through the collector's `Ingestor` into SQLite (judge chain and overlap, aggregate, commit
   in batches of up to 256). This says where the collector's time goes.
3. End to end: one collector in its own process (gRPC, SQLite in a temp dir, trust on first use),
   and `--clients` client processes, each streaming `--nodes` simulated nodes at once (one Submit
   stream per node, like one agent per node). Every envelope batches `--intervals` consecutive
   1 s intervals (default 1: one record per node per second) of `--gpus` GPUs. Envelopes are
   signed before the clock starts: signing
   is the agents' cost, not the collector's. The figure is GPU-interval records acknowledged as
   accepted per second of wall time, from the first send to the last ack; and the same per
   second of the collector process's own CPU time (from /proc), which is what it would reach
   with the clients on other machines.

Everything runs on this machine, so clients and collector share its cores: on a 2-core box the
wall-clock figure understates what a collector with 2 cores of its own reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import multiprocessing as mp
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.config import CollectorConfig, ServerLimits, parse_verify_workers
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.server import run_collector
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope, pae
from flopwatch.keys import SigningKey, public_raw
from flopwatch.model import Pipe, Precision
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from flopwatch.verify import RecordVerifier

S = 10**9
T0 = time.time_ns() - 3 * 86400 * S  # intervals lie in the past: the collector refuses future
PID = 4242


def node_envelopes(
    node: int, gpus: int, records: int, per: int = 1
) -> tuple[SigningKey, list[bytes]]:
    """`records` chained envelopes of one node, each `per` consecutive 1 s intervals of `gpus`
    H100s."""
    key = SigningKey.generate()
    builder = RecordBuilder(
        node_id=f"bench-node-{node}",
        cluster="bench",
        signer=key,
        head=ChainHead(),
        now_ns=time.time_ns,
    )
    infos = [
        GpuInfo(f"GPU-bench-{node}-{i}", "NVIDIA H100 80GB HBM3", 132, (9, 0), 1980, index=i)
        for i in range(gpus)
    ]
    # Runs and accounts on: 8 jobs in 4 runs of 2 accounts (every record adds to a run, an
    # account and a day of it, as well as to its job).
    windows = [
        JobWindow(
            f"slurm:bench/{node % 8}",
            PID,
            0,
            None,
            Precision.BF16,
            run=f"bench-run-{node % 4}",
            account=f"bench-account-{node % 2}",
        )
    ]
    out = []
    for r in range(records):
        readings = [
            GpuReading(
                gpu=g,
                start_ns=T0 + (r * per + k) * S,
                end_ns=T0 + (r * per + k + 1) * S,
                pipe_busy={Pipe.HMMA: 0.6, Pipe.FP32: 0.05},
                sm_clock_mhz_s=1755.0,
                clock_samples=10,
                energy_mj=650_000,
                processes=(ProcessShare(PID, 1.0),),
            )
            for k in range(per)
            for g in infos
        ]
        out.append(builder.build(readings, windows).to_bytes())
    return key, out


def timed(label: str, n: int, seconds: float, unit: str = "envelopes") -> None:
    per = seconds / n * 1e6
    print(f"  {label:<44} {n / seconds:>12,.0f} {unit}/s   ({per:,.1f} us each)")


def bench_raw_ed25519(gpus: int) -> float:
    key, envs = node_envelopes(0, gpus, 1)
    env = Envelope.from_bytes(envs[0])
    message = pae(env.payload_type, env.payload)
    sig = env.signatures[0][1]
    public = key.public_key
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        for _ in range(500):
            public.verify(sig, message)
        n += 500
    seconds = time.perf_counter() - start
    timed("raw Ed25519 verify (one core)", n, seconds, "verifications")
    return n / seconds


def bench_stages(gpus: int, nodes: int, records: int, per: int) -> None:
    keyed = [node_envelopes(i, gpus, records, per) for i in range(nodes)]
    trusted = {k.key_id: k.public_key for k, _ in keyed}
    flat = [e for _, envs in keyed for e in envs]

    start = time.perf_counter()
    for data in flat:
        Envelope.from_bytes(data).verify(trusted)
    timed("parse + signature check", len(flat), time.perf_counter() - start)

    verifier = RecordVerifier(trusted_keys=trusted)
    start = time.perf_counter()
    for data in flat:
        verifier.verify_bytes(data)
    timed("whole record verifier (recomputes FLOPs)", len(flat), time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        for i, (key, _) in enumerate(keyed):
            store.enroll(public_raw(key.public_key), f"bench-node-{i}")
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [])
        # Interleave nodes the way many streams would arrive, in commit-sized batches.
        order = [envs[r] for r in range(records) for _, envs in keyed]
        start = time.perf_counter()
        for i in range(0, len(order), 256):
            acks = ingestor.ingest(order[i : i + 256])
            assert all(a.status == "accepted" for a in acks), acks[0]
        seconds = time.perf_counter() - start
        timed("Ingestor into SQLite (verify+judge+commit)", len(order), seconds)
        rate = len(order) * gpus * per / seconds
        print(f"  {'':<44} {rate:>12,.0f} GPU-interval records/s")
        store.close()


# -- end to end --------------------------------------------------------------------------------


# The bench's client processes stream many simulated nodes over one connection each, from one
# address, where real agents hold one stream on a connection of their own: the collector's
# per-connection, per-address and per-peer caps (ServerLimits) are raised to what that takes,
# so that the figure is the collector's work, not its refusal of an unusual client.
BENCH_SERVER_LIMITS = ServerLimits(
    max_streams_per_connection=1024,
    max_streams_per_address=4096,
    max_inflight_bytes_per_peer=256 << 20,
)


def collector_main(db: str, ports: Any, stop: Any, profile: str | None, workers: int) -> None:
    config = CollectorConfig(
        listen="127.0.0.1:0",
        db=f"sqlite:{db}",
        metrics_listen=None,
        thresholds=(10**30,),
        insecure=True,
        enroll_on_first_use=True,
        verify_workers=workers,
        server=BENCH_SERVER_LIMITS,
    )

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)))
        await run_collector(config, ready=lambda p, _m: ports.put(p), stop=done)

    logging.basicConfig(level=logging.ERROR)
    if profile:
        # The ingest work runs on the collector's worker thread; profile that thread.
        profiler = cProfile.Profile()
        _orig = Ingestor.ingest_from

        def ingest(self: Ingestor, *a: Any, **kw: Any) -> Any:
            profiler.enable()
            try:
                return _orig(self, *a, **kw)
            finally:
                profiler.disable()

        Ingestor.ingest_from = ingest  # type: ignore[method-assign]
        asyncio.run(main())
        profiler.dump_stats(profile)
    else:
        asyncio.run(main())


async def stream_node(stub: Any, key: SigningKey, envs: Sequence[bytes]) -> int:
    metadata = (("flopwatch-public-key", public_raw(key.public_key).hex()),)

    async def requests() -> Any:
        for data in envs:
            yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))

    accepted = acked = 0
    async for response in stub.Submit(requests(), metadata=metadata):
        for ack in response.acks:
            acked += 1
            accepted += ack.status == cpb.ACK_STATUS_ACCEPTED
        if acked == len(envs):
            break
    return accepted


def client_main(
    client: int,
    port: int,
    nodes: int,
    gpus: int,
    records: int,
    per: int,
    ready: Any,
    go: Any,
    out: Any,
    nice: int = 0,
) -> None:
    keyed = [node_envelopes(client * 10_000 + i, gpus, records, per) for i in range(nodes)]
    os.nice(nice)  # after signing: only sending runs at this priority

    async def main() -> tuple[int, float, float]:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 2 << 20)]
        ) as channel:
            stub = collector_pb2_grpc.CollectorStub(channel)  # type: ignore[no-untyped-call]
            await channel.channel_ready()
            ready.put(client)
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            start = time.time()
            counts = await asyncio.gather(*(stream_node(stub, k, e) for k, e in keyed))
            return sum(counts), start, time.time()

    out.put(asyncio.run(main()))


def process_tree(pid: int) -> set[int]:
    """`pid` and its live child processes (the collector's verify workers)."""
    pids = {pid}
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids.update(int(c) for c in children.read_text().split())
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its live child processes."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def bench_end_to_end(
    clients: int,
    nodes: int,
    gpus: int,
    records: int,
    per: int,
    profile: str | None,
    workers: int,
    client_nice: int = 0,
) -> None:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        ports, stop, ready, go, out = (
            ctx.Queue(),
            ctx.Event(),
            ctx.Queue(),
            ctx.Event(),
            ctx.Queue(),
        )
        collector = ctx.Process(
            target=collector_main,
            args=(str(Path(tmp) / "c.db"), ports, stop, profile, workers),
        )
        collector.start()
        port = ports.get(timeout=60)
        procs = [
            ctx.Process(
                target=client_main,
                args=(c, port, nodes, gpus, records, per, ready, go, out, client_nice),
            )
            for c in range(clients)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=600)  # every client has signed its envelopes
        assert collector.pid is not None
        cpu0 = cpu_seconds(collector.pid)
        go.set()
        results = [out.get(timeout=3600) for _ in procs]
        cpu1 = cpu_seconds(collector.pid)
        for p in procs:
            p.join()
        stop.set()
        collector.join(timeout=60)

    accepted = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    cpu = cpu1 - cpu0
    expected = clients * nodes * records
    each = gpus * per
    print(f"  envelopes accepted: {accepted:,} of {expected:,} ({each} GPU-intervals each)")
    print(f"  wall {wall:.2f} s, collector CPU {cpu:.2f} s ({cpu / wall:.2f} cores busy)")
    print(f"  {'GPU-interval records/s accepted (wall)':<44} {accepted * each / wall:>12,.0f}")
    print(f"  {'GPU-interval records per collector CPU-s':<44} {accepted * each / cpu:>12,.0f}")
    print(f"  {'envelopes (signatures) per second (wall)':<44} {accepted / wall:>12,.0f}")
    if profile:
        print(f"\n  ingest-thread profile of the collector (top 15 by cumulative time), {profile}:")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--nodes", type=int, default=32, help="node streams per client (default 32)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs per node, per envelope (default 8)")
    p.add_argument(
        "--intervals",
        type=int,
        default=1,
        help="consecutive 1 s intervals per envelope (default 1: one envelope per node per "
        "second; more means fewer signatures per GPU-interval)",
    )
    p.add_argument("--records", type=int, default=100, help="envelopes per node (default 100)")
    p.add_argument("--profile", metavar="FILE", help="cProfile the collector's ingest path")
    p.add_argument("--skip-stages", action="store_true", help="only the end-to-end figure")
    p.add_argument(
        "--verify-workers",
        default="auto",
        metavar="N",
        help="the collector's --verify-workers (default auto: one per CPU, at most 4)",
    )
    p.add_argument(
        "--client-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the clients' sending at nice N (e.g. 19), so that on a small box the "
        "collector gets the cores first, as it would with the clients elsewhere",
    )
    args = p.parse_args(argv)

    print(f"flopwatch collector throughput ({os.cpu_count()} CPUs, {sys.version.split()[0]})")
    print("1. raw signature verification")
    bench_raw_ed25519(args.gpus)
    if not args.skip_stages:
        print(
            f"2. stages in process ({args.gpus} GPUs x {args.intervals} interval(s) per "
            "envelope, 16 nodes x 50 envelopes)"
        )
        bench_stages(args.gpus, 16, 50, args.intervals)
    workers = parse_verify_workers(args.verify_workers)
    print(
        f"3. end to end: {args.clients} client processes x {args.nodes} node streams x "
        f"{args.records} envelopes -> one collector process (gRPC, SQLite) with {workers} "
        "verify worker(s)"
    )
    bench_end_to_end(
        args.clients,
        args.nodes,
        args.gpus,
        args.records,
        args.intervals,
        args.profile,
        workers,
        args.client_nice,
    )


if __name__ == "__main__":
    main()
