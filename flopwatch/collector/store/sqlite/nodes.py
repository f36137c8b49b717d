"""SQLite side of node trust and liveness: enrollment tokens, keys awaiting approval, when each
key last delivered, which silence was alerted, and whole-device FLOP sums.

Functions take the store's connection and run inside the caller's transaction (`SQLiteStore`
opens it); nothing here commits. FLOP sums are decimal TEXT, added as Python ints (exact).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.store import common
from flopwatch.collector.store.records import (
    ClockNote,
    GpuTotal,
    JobDelta,
    PendingKey,
    device_sums,
)
from flopwatch.collector.store.sqlite.matching import keyed, select_matching
from flopwatch.errors import EnrollmentError, StoreError
from flopwatch.verify.record import VerifiedRecord


# -- written with every committed batch ------------------------------------------------------
def record_activity(
    db: sqlite3.Connection, records: Sequence[VerifiedRecord], received_at_ns: int
) -> None:
    """Last-record time of every key in the batch, and the per-device sums."""
    db.executemany(
        "UPDATE nodes SET last_record_ns = max(coalesce(last_record_ns, 0), ?) WHERE key_id = ?",
        [(received_at_ns, key_id) for key_id in sorted({r.key_id for r in records})],
    )
    _add_gpu_totals(db, records)


def _add_gpu_totals(db: sqlite3.Connection, records: Sequence[VerifiedRecord]) -> None:
    sums = device_sums(records)
    held = {
        (row[0], row[1]): JobDelta(int(row[2]), int(row[3]), row[4], row[5], row[6])
        for row in select_matching(
            db,
            "WITH w (key_id, gpu) AS ({rows}) SELECT t.key_id, t.gpu, t.flops_estimate, "
            "t.flops_upper, t.first_start_ns, t.last_end_ns, t.gpu_intervals FROM w "
            "JOIN gpu_totals t ON t.key_id = w.key_id AND t.gpu = w.gpu",
            sorted(sums),
        )
    }
    rows = []
    for key, (node_id, added) in sums.items():
        delta = added if key not in held else added.plus(held[key])
        rows.append(
            (
                *key,
                node_id,
                str(delta.flops_estimate),
                str(delta.flops_upper),
                delta.first_start_ns,
                delta.last_end_ns,
                delta.gpu_intervals,
            )
        )
    db.executemany("INSERT OR REPLACE INTO gpu_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def gpu_totals(db: sqlite3.Connection, key_ids: Collection[str] | None) -> list[GpuTotal]:
    sql = (
        "SELECT key_id, node_id, gpu, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals FROM gpu_totals"
    )
    if key_ids is None:
        rows = db.execute(sql + " ORDER BY key_id, gpu").fetchall()
    else:  # a separate statement: "? IS NULL OR ..." would scan the whole table every batch
        sql += " WHERE key_id IN ({rows}) ORDER BY key_id, gpu"
        rows = select_matching(db, sql, keyed(key_ids))
    return [
        GpuTotal(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]))
        for r in rows
    ]


# -- enrollment tokens and keys awaiting approval --------------------------------------------
def add_token(
    db: sqlite3.Connection, token_hash: str, node_id: str, created_ns: int, expires_ns: int
) -> None:
    if not node_id:
        raise StoreError("an enrollment token needs a node id")
    try:
        db.execute(
            "INSERT INTO enroll_tokens VALUES (?, ?, ?, ?, NULL, NULL)",
            (token_hash, node_id, created_ns, expires_ns),
        )
    except sqlite3.IntegrityError as e:
        raise StoreError("an enrollment token with this hash exists already") from e


def redeem_token(db: sqlite3.Connection, token_hash: str, public_raw: bytes, now_ns: int) -> str:
    """See `Store.redeem_enroll_token`."""
    key_id = common.key_id_to_enroll(public_raw)  # 32 bytes, or KeyFileError
    node_id, expires_ns, used_ns = common.token_node(
        db.execute(
            "SELECT node_id, expires_at_ns, used_at_ns FROM enroll_tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
    )
    held = db.execute("SELECT node_id, status FROM nodes WHERE key_id = ?", (key_id,)).fetchone()
    if common.enrolled_for(key_id, node_id, held, EnrollmentError):
        return key_id  # already enrolled for this node: nothing to spend
    common.check_unspent(used_ns, expires_ns, now_ns)
    db.execute(
        "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
        "VALUES (?, ?, ?, 'enrolled', ?)",
        (key_id, node_id, public_raw, now_ns),
    )
    db.execute(
        "UPDATE enroll_tokens SET used_at_ns = ?, used_by_key_id = ? WHERE token_hash = ?",
        (now_ns, key_id, token_hash),
    )
    return key_id


def note_pending(
    db: sqlite3.Connection,
    public_raw: bytes,
    node_id: str,
    now_ns: int,
    limits: PendingKeyLimits,
) -> bool:
    key_id = common.key_id_to_enroll(public_raw)
    held = db.execute("SELECT node_id FROM pending_keys WHERE key_id = ?", (key_id,)).fetchone()
    counts = db.execute(
        common.PENDING_COUNTS.format(p="?"), (node_id, key_id, now_ns - common.MINUTE_NS)
    ).fetchone()
    if not common.pending_room(held, node_id, counts, limits):
        return False
    db.execute(
        "INSERT INTO pending_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
        "node_id = excluded.node_id, last_seen_ns = excluded.last_seen_ns",
        (key_id, node_id, public_raw, now_ns, now_ns),
    )
    return True


def remove_pending(db: sqlite3.Connection, key_ids: Collection[str]) -> int:
    removed = 0
    for key_id in sorted(set(key_ids)):
        removed += db.execute(
            "DELETE FROM pending_keys WHERE key_id = ? "
            "AND key_id NOT IN (SELECT key_id FROM nodes)",
            (key_id,),
        ).rowcount
    return removed


def pending_keys(db: sqlite3.Connection) -> list[PendingKey]:
    rows = db.execute(
        "SELECT key_id, node_id, public_key, first_seen_ns, last_seen_ns FROM pending_keys "
        "WHERE key_id NOT IN (SELECT key_id FROM nodes) ORDER BY key_id"
    )
    return [PendingKey(r[0], r[1], bytes(r[2]), int(r[3]), int(r[4])) for r in rows]


def note_clock_ahead(db: sqlite3.Connection, notes: Collection[ClockNote]) -> None:
    db.executemany(
        "UPDATE nodes SET clock_ahead_ns = ?, clock_ahead_at_ns = ? WHERE key_id = ? "
        "AND status = 'enrolled' AND coalesce(clock_ahead_at_ns, 0) <= ?",
        [(n.ahead_ns, n.at_ns, n.key_id, n.at_ns) for n in sorted(notes, key=lambda n: n.key_id)],
    )


def claim_silence(db: sqlite3.Connection, key_id: str, since_ns: int) -> bool:
    cur = db.execute(
        "UPDATE nodes SET silence_alerted_ns = ?1 WHERE key_id = ?2 "
        "AND (silence_alerted_ns IS NULL OR silence_alerted_ns <> ?1)",
        (since_ns, key_id),
    )
    return cur.rowcount == 1
