"""The writes of one committed batch, run by `PostgresStore.commit` inside its transaction.

Several collectors may share the database, and the ingestor judged the batch (chain, overlap)
against the store BEFORE this transaction, so another collector may have committed a conflicting
record since. Each batch therefore:

  1. Takes transaction-scoped advisory locks on every node key and every device (`gpu_key`) it
     touches, in the order `flopwatch.collector.store.postgres.locks` gives, so no two writers
     deadlock.
  2. Judges every record again under those locks, against the chain and the measured time now
     committed plus the records before it in the batch, by the rules the ingestor applies
     (`flopwatch.chain.judge`, `flopwatch.intervals.merge`). Anything that no longer judges sound
     (the same record, a fork of it, overlapping GPU time) raises StoreConflictError: the whole
     batch rolls back and the ingestor judges it afresh, so the record comes back as duplicate
     or rejected, never counted twice.
  3. Adds to job, per-GPU, run, account and account-day sums in place
     (`flopwatch.collector.store.postgres.sums`: `x = x + delta`, no read-modify-write): a
     row's lock makes its writers take turns, losing no update.
  4. Inserts alerts with ON CONFLICT DO NOTHING RETURNING, in sorted order: of two collectors
     that decide the same (job, threshold), exactly one gets the row back and fires it.
  5. Appends the records to the transparency log, last, under the log's global lock.

Nothing here commits or rolls back; FLOP sums are Python ints in, NUMERIC(40, 0) in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from flopwatch.chain import Neighbours, Verdict, judge
from flopwatch.collector.store.postgres import nodes, runs, tlog
from flopwatch.collector.store.postgres.locks import Cur, lock_keys_and_devices
from flopwatch.collector.store.postgres.sums import add_sums
from flopwatch.collector.store.records import (
    AlertEvent,
    DaysKept,
    aggregate,
    job_gpu_sums,
    spans_by_device,
)
from flopwatch.collector.store.rows import chain_rows, gap_rows, record_row
from flopwatch.errors import StoreConflictError
from flopwatch.intervals import Clash, merge
from flopwatch.keys import short_key_id
from flopwatch.verify.record import VerifiedRecord


def write_batch(
    cur: Cur,
    scope: str,
    records: Sequence[VerifiedRecord],
    alerts: Sequence[AlertEvent],
    received_at_ns: int,
    *,
    days: DaysKept,
) -> list[AlertEvent]:
    """Apply records and alerts; return the alerts not already recorded (by anyone)."""
    if not records:
        return insert_alerts(cur, alerts)
    lock_keys_and_devices(
        cur,
        scope,
        {r.key_id for r in records},
        {d for r in records for d in r.sums.spans},
    )
    check_keys(cur, records)
    check_chains(cur, records)
    add_coverage(cur, records)
    insert_records(cur, records, received_at_ns)
    add_job_gpus(cur, records)
    nodes.record_activity(cur, records, received_at_ns)
    add_job_totals(cur, records)
    runs.add_runs(cur, records, days)
    new = insert_alerts(cur, alerts)
    tlog.append_records(cur, scope, records)  # last: its lock is global
    return new


def check_keys(cur: Cur, records: Sequence[VerifiedRecord]) -> None:
    """Step 2 for keys: a key revoked since the batch was judged (`revoke` takes the key's lock
    too) makes the batch judged again, so its records come back "revoked_key"."""
    cur.execute(
        "SELECT key_id FROM nodes WHERE key_id = ANY(%s) AND status = 'revoked'",
        (sorted({r.key_id for r in records}),),
    )
    revoked = [row[0] for row in cur.fetchall()]
    if revoked:
        raise StoreConflictError(
            f"key {short_key_id(revoked[0])} was revoked after the batch was judged"
        )


def check_chains(cur: Cur, records: Sequence[VerifiedRecord]) -> None:
    """Step 2 for chains: each record against the held chain and the batch before it."""
    wanted = {(r.key_id, r.sequence + i) for r in records for i in (-1, 0, 1)}
    keys, sequences = zip(*sorted(wanted), strict=True)
    cur.execute(
        "SELECT r.key_id, r.sequence, r.digest, r.previous_digest FROM records r "
        "JOIN unnest(%s::text[], %s::bigint[]) AS w (key_id, sequence) "
        "ON r.key_id = w.key_id AND r.sequence = w.sequence",
        (list(keys), list(sequences)),
    )
    held = {(k, int(s)): (bytes(d), bytes(p)) for k, s, d, p in cur.fetchall()}
    for r in records:
        verdict = judge(
            r.sequence,
            r.digest,
            r.previous_digest,
            Neighbours.around(r.sequence, partial(_held_at, held, r.key_id)),
        )
        if verdict.verdict is not Verdict.ACCEPT:
            what = "already held" if verdict.verdict is Verdict.DUPLICATE else verdict.detail
            raise StoreConflictError(
                f"key {short_key_id(r.key_id)} sequence {r.sequence}: {what} (committed by "
                f"another writer)"
            )
        held[(r.key_id, r.sequence)] = (r.digest, r.previous_digest)


def _held_at(
    held: dict[tuple[str, int], tuple[bytes, bytes]], key_id: str, sequence: int
) -> tuple[bytes, bytes] | None:
    return held.get((key_id, sequence))


def insert_records(cur: Cur, records: Sequence[VerifiedRecord], received_at_ns: int) -> None:
    """The envelopes, their gaps, and each key's held count and highest sequence."""
    with cur.copy(
        "COPY records (key_id, sequence, digest, previous_digest, node_id, envelope, "
        "received_at_ns) FROM STDIN"
    ) as copy:
        for r in records:
            copy.write_row(record_row(r, received_at_ns))
    gaps = gap_rows(records)
    if gaps:
        with cur.copy(
            "COPY gaps (key_id, sequence, gpu_uuid, start_ns, end_ns, reason, detail) FROM STDIN"
        ) as copy:
            for row in gaps:
                copy.write_row(row)
    cur.executemany(
        "INSERT INTO chains AS c (key_id, held, highest) VALUES (%s, %s, %s) "
        "ON CONFLICT (key_id) DO UPDATE SET held = c.held + excluded.held, "
        "highest = greatest(c.highest, excluded.highest)",
        chain_rows(records),
    )


def add_job_totals(cur: Cur, records: Sequence[VerifiedRecord]) -> None:
    """Step 3: each job's sums, added in place, in job order."""
    add_sums(
        cur,
        "job_totals",
        ["job_id"],
        [((j,), d) for j, d in aggregate(records).items()],
        energy=True,
    )


def add_job_gpus(cur: Cur, records: Sequence[VerifiedRecord]) -> None:
    """Per (job, node key, GPU) sums: which nodes and GPUs contributed to a job."""
    sums = job_gpu_sums(records)
    add_sums(
        cur,
        "job_gpus",
        ["job_id", "key_id", "gpu_uuid"],
        [((*key, node_id), d) for key, (node_id, d) in sums.items()],
        extra=["node_id"],
    )


def add_coverage(cur: Cur, records: Sequence[VerifiedRecord]) -> None:
    """Step 2 for measured time: merge the records' intervals into each device's disjoint runs,
    refusing any that overlaps time already held (or another interval of the batch)."""
    by_gpu = spans_by_device(records)
    gpus = sorted(by_gpu)
    held = _held_runs(
        cur,
        gpus,
        [min(s for s, _ in by_gpu[g]) for g in gpus],
        [max(e for _, e in by_gpu[g]) for g in gpus],
    )
    drop: list[tuple[str, int]] = []
    add: list[tuple[str, int, int]] = []
    for gpu in gpus:
        merged = merge(held.get(gpu, []), by_gpu[gpu])
        if isinstance(merged, Clash):
            start, end = merged.interval
            raise StoreConflictError(
                f"interval [{start}, {end}) of {gpu} overlaps measured time "
                "(committed by another writer)"
            )
        drop += [(gpu, s) for s, _ in merged.removed]
        add += [(gpu, s, e) for s, e in merged.added]
    cur.executemany("DELETE FROM coverage WHERE gpu = %s AND start_ns = %s", drop)
    cur.executemany("INSERT INTO coverage (gpu, start_ns, end_ns) VALUES (%s, %s, %s)", add)


def _held_runs(
    cur: Cur, gpus: list[str], los: list[int], his: list[int]
) -> dict[str, list[tuple[int, int]]]:
    """Per device: the held runs that may meet or touch [lo, hi] (the run holding lo onward)."""
    cur.execute(
        "SELECT w.gpu, c.start_ns, c.end_ns "
        "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS w (gpu, lo, hi) "
        "CROSS JOIN LATERAL (SELECT start_ns, end_ns FROM coverage "
        "  WHERE gpu = w.gpu AND start_ns <= w.hi AND start_ns >= coalesce("
        "    (SELECT max(start_ns) FROM coverage WHERE gpu = w.gpu AND start_ns <= w.lo), w.lo)"
        ") AS c ORDER BY w.gpu, c.start_ns",
        (gpus, los, his),
    )
    out: dict[str, list[tuple[int, int]]] = {}
    for gpu, start, end in cur.fetchall():
        out.setdefault(gpu, []).append((int(start), int(end)))
    return out


def insert_alerts(cur: Cur, alerts: Sequence[AlertEvent]) -> list[AlertEvent]:
    """Step 4: record alerts; the one writer whose insert returns the row fires it."""
    fired: set[tuple[str, int]] = set()
    for a in sorted(alerts, key=lambda a: (a.job_id, a.threshold)):
        p = a.projected_next
        cur.execute(
            "INSERT INTO alerts (job_id, threshold, basis, value, at_ns, next_threshold, "
            "next_seconds) VALUES (%s, %s::numeric, %s, %s::numeric, %s, %s::numeric, %s) "
            "ON CONFLICT (job_id, threshold) DO NOTHING RETURNING true",
            (
                a.job_id,
                a.threshold,
                a.basis,
                a.value,
                a.at_ns,
                None if p is None else p.threshold,
                None if p is None else p.seconds,
            ),
        )
        if cur.fetchone() is not None:
            fired.add((a.job_id, a.threshold))
    return [a for a in alerts if (a.job_id, a.threshold) in fired]
