"""Transparency log: does appending cost more as the log grows? And what does a proof cost?

    .venv/bin/python bench/translog_append.py [--leaves 1000000] [--batch 256]

What it does, in order, and what each figure means:

1. Appends `--leaves` synthetic records (random 600-byte envelopes, one job per 5000, from
   `--keys` node keys in turn) to a fresh SQLite store, `--batch` per transaction, as the commit
   does: the function the commit path calls (`flopwatch.collector.store.sqlite.tlog.append_leaves`:
   read the right edge, hash, insert nodes, leaf rows and job rows), then the `records` rows with
   their leaf index. It prints the median time per batch over a window of batches at the start and
   at four points further on: if appending grew with the log, later windows would be slower. Wall
   time (WAL, synchronous=FULL, one COMMIT per batch, as in the collector) and this process's CPU
   time (less disturbed by the machine's other load), in all and in `append_leaves` alone.
2. Then, at the final size: a tree root, one inclusion proof, and a batch of 256 inclusion
   proofs (what `flopwatch report` does per 256 envelopes), each as the mean of several runs.

The records are not signed attestations: only the log's own cost is measured.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.sqlite import tlog as sqlite_tlog
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey


def _batch(keys: list[str], start: int, n: int) -> list[sqlite_tlog.Leaf]:
    return [
        sqlite_tlog.Leaf(
            keys[(start + i) % len(keys)],
            (start + i) // len(keys) + 1,
            os.urandom(600),
            frozenset({f"job-{(start + i) // 5000}"}),
        )
        for i in range(n)
    ]


def _insert_records(db: sqlite3.Connection, leaves: list[sqlite_tlog.Leaf], first: int) -> None:
    db.executemany(
        "INSERT INTO records (key_id, sequence, digest, previous_digest, node_id, envelope, "
        "received_at_ns, leaf_index) VALUES (?, ?, ?, ?, 'node', ?, 0, ?)",
        [
            (x.key_id, x.sequence, os.urandom(32), os.urandom(32), x.data, first + n)
            for n, x in enumerate(leaves)
        ],
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--keys", type=int, default=1000, help="node keys the records come from")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        keys = [store.enroll(os.urandom(32), f"node-{i}") for i in range(args.keys)]
        db = store._db  # the bench drives the commit's log writes directly
        batches = args.leaves // args.batch
        wall: list[float] = []
        cpu: list[float] = []
        log_cpu: list[float] = []
        for b in range(batches):
            leaves = _batch(keys, b * args.batch, args.batch)
            t0, c0 = time.perf_counter(), time.process_time()
            db.execute("BEGIN IMMEDIATE")
            c1 = time.process_time()
            first = sqlite_tlog.append_leaves(db, leaves)
            log_cpu.append(time.process_time() - c1)
            _insert_records(db, leaves, first)
            db.execute("COMMIT")
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        size = store.log_size()
        print(f"appended {size} leaves in batches of {args.batch} (one transaction each)")
        window = max(1, min(200, batches // 5))
        for m in range(0, batches - window + 1, max(window, batches // 5)):
            w, c = statistics.median(wall[m : m + window]), statistics.median(cpu[m : m + window])
            lc = statistics.median(log_cpu[m : m + window])
            print(
                f"  log size {m * args.batch:>10,}: per batch median {w * 1e3:6.2f} ms wall, "
                f"{c * 1e3:5.2f} ms CPU, of which the log {lc * 1e3:5.2f} ms "
                f"({lc / args.batch * 1e6:4.1f} us per record)"
            )
        log = TransparencyLog(store, SigningKey.generate())

        def timed(what: str, fn: object, runs: int = 50) -> None:
            assert callable(fn)
            t0 = time.perf_counter()
            for _ in range(runs):
                fn()
            print(f"  {what}: {(time.perf_counter() - t0) / runs * 1e3:.2f} ms")

        print(f"at tree size {size:,}:")
        timed("root", lambda: log.root(size))
        timed("one inclusion proof", lambda: log.inclusion_proof(size // 3, size))
        indices = range(size // 2, size // 2 + 256 * 7, 7)
        timed("256 inclusion proofs", lambda: log.inclusion_proofs(indices, size), runs=10)
        timed("consistency proof", lambda: log.consistency_proof(size // 3, size))
        print(f"database file: {os.path.getsize(Path(tmp) / 'bench.db') / 2**20:.0f} MiB")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
