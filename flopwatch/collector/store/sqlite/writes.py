"""The writes of one committed batch, run by `SQLiteStore.commit` inside its transaction.

Sums are read, added as Python ints (exact past 2^63) and written back as decimal text; nothing
here commits or rolls back. A step that finds the store inconsistent raises StoreError, which
rolls the whole batch back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from flopwatch.collector.store.records import (
    AlertEvent,
    DaysKept,
    JobDelta,
    aggregate,
    job_gpu_sums,
    spans_by_device,
)
from flopwatch.collector.store.rows import chain_rows, gap_rows, record_row
from flopwatch.collector.store.sqlite import nodes, runs, tlog
from flopwatch.collector.store.sqlite.matching import select_matching
from flopwatch.errors import StoreError
from flopwatch.intervals import Clash, Interval, merge
from flopwatch.verify.record import VerifiedRecord


def write_batch(
    db: sqlite3.Connection,
    records: Sequence[VerifiedRecord],
    alerts: Sequence[AlertEvent],
    received_at_ns: int,
    *,
    days: DaysKept,
) -> list[AlertEvent]:
    """Apply records and alerts; return the alerts not already recorded."""
    first_leaf = tlog.append_records(db, records)  # the transparency log, same transaction
    insert_records(db, records, received_at_ns, first_leaf)
    add_job_totals(db, records)
    add_job_gpus(db, records)
    runs.add_runs(db, records, days)
    add_coverage(db, records)
    nodes.record_activity(db, records, received_at_ns)
    return insert_alerts(db, alerts)


def insert_records(
    db: sqlite3.Connection,
    records: Sequence[VerifiedRecord],
    received_at_ns: int,
    first_leaf: int,
) -> None:
    """The envelopes (record i is log leaf first_leaf + i), their gaps, and each key's held
    count and highest sequence."""
    db.executemany(
        "INSERT INTO records (key_id, sequence, digest, previous_digest, node_id, envelope, "
        "received_at_ns, leaf_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*record_row(r, received_at_ns), first_leaf + n) for n, r in enumerate(records)],
    )
    db.executemany("INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?, ?)", gap_rows(records))
    db.executemany(
        "INSERT INTO chains VALUES (?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
        "held = held + excluded.held, highest = max(highest, excluded.highest)",
        chain_rows(records),
    )


def _delta(row: tuple[str, str, int, int, int]) -> JobDelta:
    return JobDelta(int(row[0]), int(row[1]), row[2], row[3], row[4])


def _text(d: JobDelta) -> tuple[str, str, int, int, int]:
    return (
        str(d.flops_estimate),
        str(d.flops_upper),
        d.first_start_ns,
        d.last_end_ns,
        d.gpu_intervals,
    )


def add_job_totals(db: sqlite3.Connection, records: Sequence[VerifiedRecord]) -> None:
    """Each job's sums, GPU time and energy included."""
    runs.add_sums(db, "job_totals", {(j,): d for j, d in aggregate(records).items()})


def add_job_gpus(db: sqlite3.Connection, records: Sequence[VerifiedRecord]) -> None:
    """Per (job, node key, GPU) sums: which nodes and GPUs contributed to a job."""
    sums = job_gpu_sums(records)
    held = {
        (row[0], row[1], row[2]): _delta(row[3:])
        for row in select_matching(
            db,
            "WITH w (job_id, key_id, gpu_uuid) AS ({rows}) SELECT t.job_id, t.key_id, "
            "t.gpu_uuid, t.flops_estimate, t.flops_upper, t.first_start_ns, t.last_end_ns, "
            "t.gpu_intervals FROM w JOIN job_gpus t ON t.job_id = w.job_id "
            "AND t.key_id = w.key_id AND t.gpu_uuid = w.gpu_uuid",
            sorted(sums),
        )
    }
    db.executemany(
        "INSERT OR REPLACE INTO job_gpus VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*key, node_id, *_text(delta if key not in held else delta.plus(held[key])))
            for key, (node_id, delta) in sums.items()
        ],
    )


def add_coverage(db: sqlite3.Connection, records: Sequence[VerifiedRecord]) -> None:
    """Merge the records' intervals into each device's disjoint runs of measured time."""
    runs: dict[str, tuple[Interval, ...]] = {}
    for gpu, intervals in spans_by_device(records).items():
        joined = merge((), intervals)  # the batch's own intervals, joined where they touch
        if isinstance(joined, Clash):
            raise _overlap(gpu, joined)
        runs[gpu] = joined.runs
    single = {gpu: r[0] for gpu, r in runs.items() if len(r) == 1}
    _insert_single_runs(db, single)
    for gpu, gpu_runs in runs.items():
        if gpu not in single:  # several runs of one device: each may merge with the last
            for start, end in gpu_runs:
                _insert_run(db, gpu, start, end)


def _overlap(gpu: str, clash: Clash) -> StoreError:
    # The ingestor judged overlap already; this keeps the runs disjoint whatever happens.
    start, end = clash.interval
    return StoreError(f"interval [{start}, {end}) of {gpu} overlaps measured time")


def _insert_run(db: sqlite3.Connection, gpu: str, start: int, end: int) -> None:
    prev = db.execute(
        "SELECT start_ns, end_ns FROM coverage WHERE gpu = ? AND start_ns <= ? "
        "ORDER BY start_ns DESC LIMIT 1",
        (gpu, start),
    ).fetchone()
    nxt = db.execute(
        "SELECT start_ns, end_ns FROM coverage WHERE gpu = ? AND start_ns > ? "
        "ORDER BY start_ns LIMIT 1",
        (gpu, start),
    ).fetchone()
    deletes, inserts = _join(gpu, [r for r in (prev, nxt) if r is not None], (start, end))
    db.executemany("DELETE FROM coverage WHERE gpu = ? AND start_ns = ?", deletes)
    db.executemany("INSERT INTO coverage VALUES (?, ?, ?)", inserts)


def _join(
    gpu: str, held: Sequence[Sequence[int]], run: Interval
) -> tuple[list[tuple[str, int]], list[tuple[str, int, int]]]:
    """The rows to delete and insert to join `run` with the held runs around it (the one
    starting at or before it, the one after)."""
    merged = merge([(r[0], r[1]) for r in held], [run])
    if isinstance(merged, Clash):
        raise _overlap(gpu, merged)
    return [(gpu, s) for s, _ in merged.removed], [(gpu, s, e) for s, e in merged.added]


def _insert_single_runs(db: sqlite3.Connection, runs: dict[str, Interval]) -> None:
    """`_insert_run` for devices with ONE new run each, in three statements for all of them:
    the runs cannot meet each other, so each merges only with what the table holds."""
    if not runs:
        return
    neighbours = select_matching(
        db,
        "WITH w (gpu, start) AS ({rows}) SELECT w.gpu, "
        "(SELECT start_ns FROM coverage WHERE gpu = w.gpu AND start_ns <= w.start "
        "ORDER BY start_ns DESC LIMIT 1), "
        "(SELECT end_ns FROM coverage WHERE gpu = w.gpu AND start_ns <= w.start "
        "ORDER BY start_ns DESC LIMIT 1), "
        "(SELECT start_ns FROM coverage WHERE gpu = w.gpu AND start_ns > w.start "
        "ORDER BY start_ns LIMIT 1), "
        "(SELECT end_ns FROM coverage WHERE gpu = w.gpu AND start_ns > w.start "
        "ORDER BY start_ns LIMIT 1) "
        "FROM w",
        [(gpu, start) for gpu, (start, _) in sorted(runs.items())],
    )
    deletes: list[tuple[str, int]] = []
    inserts: list[tuple[str, int, int]] = []
    for gpu, prev_start, prev_end, next_start, next_end in neighbours:
        held = [r for r in ((prev_start, prev_end), (next_start, next_end)) if r[0] is not None]
        drop, add = _join(gpu, held, runs[gpu])
        deletes += drop
        inserts += add
    db.executemany("DELETE FROM coverage WHERE gpu = ? AND start_ns = ?", deletes)
    db.executemany("INSERT INTO coverage VALUES (?, ?, ?)", inserts)


def insert_alerts(db: sqlite3.Connection, alerts: Sequence[AlertEvent]) -> list[AlertEvent]:
    """Record alerts; (job, threshold) is the primary key, so each is recorded once, ever."""
    new = []
    for a in alerts:
        p = a.projected_next
        cur = db.execute(
            "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, threshold) DO NOTHING",
            (
                a.job_id,
                str(a.threshold),
                a.basis,
                str(a.value),
                a.at_ns,
                None if p is None else str(p.threshold),
                None if p is None else p.seconds,
            ),
        )
        if cur.rowcount == 1:
            new.append(a)
    return new
