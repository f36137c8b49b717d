"""Records per second a collector commits, on SQLite and on PostgreSQL (docs/postgresql.md).

    .venv/bin/python bench/store_throughput.py ingest   # verify + judge + commit, both backends
    .venv/bin/python bench/store_throughput.py commit   # the commit alone (verified beforehand)
    .venv/bin/python bench/store_throughput.py shared --collectors 2   # processes, one schema

The store and an Ingestor run in-process (no gRPC). Each record is one 1-second interval of an
8-GPU H100 node (tests/collector/collector_helpers.Node); nodes are interleaved so every batch of
`--batch` records holds all of them, as a collector's concurrent agent streams do. PostgreSQL
runs get a fresh schema each, dropped afterwards ($FLOPWATCH_BENCH_POSTGRES, default the local
test server).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.factory import open_store
from flopwatch.verify import RecordVerifier
from tests.nodes import NOW, Node

POSTGRES = os.environ.get("FLOPWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def workload(nodes: int, per_node: int, tag: str) -> tuple[list[Node], list[bytes]]:
    fleet = [Node(f"{tag}-{i}", gpus=8) for i in range(nodes)]
    by_node = [n.envelopes(per_node) for n in fleet]
    return fleet, [envs[k] for k in range(per_node) for envs in by_node]


def new_schema() -> tuple[str, str]:
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES else "?"
    return schema, f"{POSTGRES}{sep}options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")


def ingest(url: str, fleet: list[Node], envs: list[bytes], batch: int) -> float:
    """Seconds for an Ingestor to ack every envelope accepted."""
    store = open_store(url, now_ns=lambda: NOW, create=True)
    for n in fleet:
        store.enroll(n.public_raw, n.node_id)
    ingestor = Ingestor(store, ThresholdPolicy((10**25,)), [], now_ns=lambda: NOW)
    start = time.perf_counter()
    for i in range(0, len(envs), batch):
        acks = ingestor.ingest(envs[i : i + batch])
        assert {a.status for a in acks} == {"accepted"}, acks[0]
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def commit(url: str, fleet: list[Node], envs: list[bytes], batch: int) -> float:
    """Seconds for Store.commit alone, the records verified beforehand."""
    verifier = RecordVerifier(trusted_keys={n.key_id: n.key.public_key for n in fleet})
    records = [verifier.verify_bytes(e) for e in envs]
    store = open_store(url, now_ns=lambda: NOW, create=True)
    for n in fleet:
        store.enroll(n.public_raw, n.node_id)
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        store.commit(records[i : i + batch], [], NOW)
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def _collector(url: str, k: int, args: argparse.Namespace, out: mp.Queue, go: mp.Barrier) -> None:
    fleet, envs = workload(args.nodes, args.per_node, f"c{k}")
    go.wait()
    out.put((len(envs), ingest(url, fleet, envs, args.batch)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["ingest", "commit", "shared"])
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--per-node", type=int, default=128, help="records per node")
    p.add_argument("--batch", type=int, default=256, help="records per commit")
    p.add_argument("--collectors", type=int, default=2, help="processes, for 'shared'")
    args = p.parse_args()
    if args.mode == "shared":
        schema, url = new_schema()
        try:
            open_store(url, create=True).close()  # migrate once, before the race
            out: mp.Queue = mp.Queue()
            go = mp.Barrier(args.collectors)
            procs = [
                mp.Process(target=_collector, args=(url, k, args, out, go))
                for k in range(args.collectors)
            ]
            for proc in procs:
                proc.start()
            results = [out.get() for _ in procs]
            for proc in procs:
                proc.join()
        finally:
            drop_schema(schema)
        total = sum(n for n, _ in results)
        wall = max(s for _, s in results)
        each = ", ".join(f"{n / s:.0f}" for n, s in results)
        print(
            f"{args.collectors} collectors, one PostgreSQL schema: {total / wall:.0f} records/s "
            f"in all ({each} per collector)"
        )
        return
    run = ingest if args.mode == "ingest" else commit
    fleet, envs = workload(args.nodes, args.per_node, "n")
    with tempfile.TemporaryDirectory() as d:
        s = run(f"sqlite:{d}/bench.db", fleet, envs, args.batch)
        print(f"{args.mode} SQLite    : {len(envs) / s:.0f} records/s ({len(envs)} in {s:.2f} s)")
    schema, url = new_schema()
    try:
        s = run(url, fleet, envs, args.batch)
    finally:
        drop_schema(schema)
    print(f"{args.mode} PostgreSQL: {len(envs) / s:.0f} records/s ({len(envs)} in {s:.2f} s)")


if __name__ == "__main__":
    main()
