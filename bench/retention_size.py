"""Retention: bytes per record in a SQLite collector database before and after archive + prune.

    .venv/bin/python bench/retention_size.py [--records 2000]

Fills a fresh SQLite store through the ingestor with `--records` signed one-second records of
8 simulated H100 GPUs each (tests/nodes.py: 10 nodes, one job each, all over long ago), then
runs `archive_records` and `prune_records` as `flopwatch records archive|prune` do. Prints the
database size per record before and after (each after a WAL checkpoint and VACUUM, so free
pages do not count), the archive's size per record, and the records/s of archive and prune.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.archive_file import ArchiveReader
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.retention import archive_records, prune_records
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey
from tests.nodes import T0, Node, S

NODES = 10
CUT = T0 + 10 * 86400 * S


def _size(db: Path) -> int:
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("VACUUM")
    c.close()
    return db.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=2000)
    n = p.parse_args().records // NODES * NODES
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "bench.db"
        clock = T0 + 3600 * S
        store = SQLiteStore(db, now_ns=lambda: clock)
        nodes = [Node(f"node-{i}", gpus=8, job=f"slurm:c/{i}") for i in range(NODES)]
        for node in nodes:
            store.enroll(node.public_raw, node.node_id)
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: clock)
        for _ in range(n // NODES):
            acks = ingestor.ingest([node.envelope() for node in nodes])
            assert all(a.status == "accepted" for a in acks)
        before = _size(db)
        log = TransparencyLog(store, SigningKey.generate())
        out = io.BytesIO()
        t = time.perf_counter()
        archive_records(store, log, CUT, out)
        archive_s = time.perf_counter() - t
        data = out.getvalue()
        t = time.perf_counter()
        reader = ArchiveReader(Path("bench"), io.BytesIO(data), collector_key_id=log.key_id)
        result = prune_records(store, reader, CUT)
        prune_s = time.perf_counter() - t
        store.close()
        after = _size(db)
    print(
        f"records {n}: database {before / n:,.0f} B/record before, {after / n:,.0f} after "
        f"pruning {result.pruned}; archive {len(data) / n:,.0f} B/record; archive "
        f"{n / archive_s:,.0f} records/s, prune {n / prune_s:,.0f} records/s"
    )


if __name__ == "__main__":
    main()
