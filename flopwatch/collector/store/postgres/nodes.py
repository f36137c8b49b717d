"""PostgreSQL side of node trust and liveness: enrollment tokens, keys awaiting approval, when
each key last delivered, which silence was alerted, and whole-device FLOP sums.

Functions take a cursor and run inside the caller's transaction (`PostgresStore` opens it);
nothing here commits. Where collectors sharing the database could race, a row lock decides: a
token is spent once (SELECT ... FOR UPDATE), a silence episode is claimed once (a conditional
UPDATE re-checked after the competing writer commits), sums are added in place.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.store import common
from flopwatch.collector.store.postgres.locks import Cur, lock_pending
from flopwatch.collector.store.postgres.sums import add_sums
from flopwatch.collector.store.records import ClockNote, GpuTotal, PendingKey, device_sums
from flopwatch.errors import EnrollmentError, StoreError
from flopwatch.verify.record import VerifiedRecord


# -- written with every committed batch ------------------------------------------------------
def record_activity(cur: Cur, records: Sequence[VerifiedRecord], received_at_ns: int) -> None:
    """Last-record time of every key in the batch, and the per-device sums."""
    cur.executemany(
        "UPDATE nodes SET last_record_ns = greatest(last_record_ns, %s) WHERE key_id = %s",
        [(received_at_ns, key_id) for key_id in sorted({r.key_id for r in records})],
    )
    sums = device_sums(records)
    add_sums(
        cur,
        "gpu_totals",
        ["key_id", "gpu"],
        [((*key, node_id), d) for key, (node_id, d) in sums.items()],
        extra=["node_id"],
    )


def gpu_totals(cur: Cur, key_ids: Collection[str] | None) -> list[GpuTotal]:
    sql = (
        "SELECT key_id, node_id, gpu, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals FROM gpu_totals"
    )
    if key_ids is None:
        cur.execute(sql + " ORDER BY key_id, gpu")
    else:  # a separate statement, so a batch's read uses the primary key, not a scan
        cur.execute(sql + " WHERE key_id = ANY(%s) ORDER BY key_id, gpu", (sorted(key_ids),))
    return [
        GpuTotal(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]))
        for r in cur.fetchall()
    ]


# -- enrollment tokens and keys awaiting approval --------------------------------------------
def add_token(cur: Cur, token_hash: str, node_id: str, created_ns: int, expires_ns: int) -> None:
    if not node_id:
        raise StoreError("an enrollment token needs a node id")
    cur.execute(
        "INSERT INTO enroll_tokens (token_hash, node_id, created_at_ns, expires_at_ns) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING",
        (token_hash, node_id, created_ns, expires_ns),
    )
    if cur.rowcount != 1:
        raise StoreError("an enrollment token with this hash exists already")


def _enrolled_for(cur: Cur, key_id: str, node_id: str) -> bool:
    """True if the key is enrolled for `node_id`, False if it is not held; EnrollmentError if
    it is revoked or enrolled for another node."""
    cur.execute("SELECT node_id, status FROM nodes WHERE key_id = %s", (key_id,))
    return common.enrolled_for(key_id, node_id, cur.fetchone(), EnrollmentError)


def redeem_token(cur: Cur, token_hash: str, public_raw: bytes, now_ns: int) -> str:
    """See `Store.redeem_enroll_token`. The token's row lock makes two collectors redeeming
    one token at once take turns: the second finds it spent."""
    key_id = common.key_id_to_enroll(public_raw)  # 32 bytes, or KeyFileError
    cur.execute(
        "SELECT node_id, expires_at_ns, used_at_ns FROM enroll_tokens WHERE token_hash = %s "
        "FOR UPDATE",
        (token_hash,),
    )
    node_id, expires_ns, used_ns = common.token_node(cur.fetchone())
    if _enrolled_for(cur, key_id, node_id):
        return key_id  # already enrolled for this node: nothing to spend
    common.check_unspent(used_ns, expires_ns, now_ns)
    cur.execute(
        "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
        "VALUES (%s, %s, %s, 'enrolled', %s) ON CONFLICT (key_id) DO NOTHING",
        (key_id, node_id, public_raw, now_ns),
    )
    if cur.rowcount != 1 and _enrolled_for(cur, key_id, node_id):
        return key_id  # enrolled meanwhile (e.g. by an operator) for this node
    cur.execute(
        "UPDATE enroll_tokens SET used_at_ns = %s, used_by_key_id = %s WHERE token_hash = %s",
        (now_ns, key_id, token_hash),
    )
    return key_id


def note_pending(
    cur: Cur, scope: str, public_raw: bytes, node_id: str, *, now_ns: int, limits: PendingKeyLimits
) -> bool:
    """Collectors noting keys take turns (`lock_pending`), so the limits hold for all of them."""
    key_id = common.key_id_to_enroll(public_raw)
    lock_pending(cur, scope)
    cur.execute("SELECT node_id FROM pending_keys WHERE key_id = %s", (key_id,))
    held = cur.fetchone()
    cur.execute(common.PENDING_COUNTS.format(p="%s"), (node_id, key_id, now_ns - common.MINUTE_NS))
    if not common.pending_room(held, node_id, cur.fetchone() or (0, 0, 0), limits):
        return False
    cur.execute(
        "INSERT INTO pending_keys AS p (key_id, node_id, public_key, first_seen_ns, "
        "last_seen_ns) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key_id) DO UPDATE SET "
        "node_id = excluded.node_id, "
        "last_seen_ns = greatest(p.last_seen_ns, excluded.last_seen_ns)",
        (key_id, node_id, public_raw, now_ns, now_ns),
    )
    return True


def remove_pending(cur: Cur, key_ids: Collection[str]) -> int:
    cur.execute(
        "DELETE FROM pending_keys p WHERE key_id = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.key_id = p.key_id)",
        (sorted(key_ids),),
    )
    return cur.rowcount


def pending_keys(cur: Cur) -> list[PendingKey]:
    cur.execute(
        "SELECT key_id, node_id, public_key, first_seen_ns, last_seen_ns FROM pending_keys p "
        "WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.key_id = p.key_id) ORDER BY key_id"
    )
    return [PendingKey(r[0], r[1], bytes(r[2]), int(r[3]), int(r[4])) for r in cur.fetchall()]


def note_clock_ahead(cur: Cur, notes: Collection[ClockNote]) -> None:
    """In key order, like every other writer of node rows."""
    cur.executemany(
        "UPDATE nodes SET clock_ahead_ns = %(ahead)s, clock_ahead_at_ns = %(at)s "
        "WHERE key_id = %(key)s AND status = 'enrolled' "
        "AND coalesce(clock_ahead_at_ns, 0) <= %(at)s",
        [
            {"ahead": n.ahead_ns, "at": n.at_ns, "key": n.key_id}
            for n in sorted(notes, key=lambda n: n.key_id)
        ],
    )


def claim_silence(cur: Cur, key_id: str, since_ns: int) -> bool:
    """One claim per episode: a second collector's UPDATE waits for the first to commit, then
    finds the condition false and changes nothing."""
    cur.execute(
        "UPDATE nodes SET silence_alerted_ns = %(since)s WHERE key_id = %(key)s "
        "AND silence_alerted_ns IS DISTINCT FROM %(since)s",
        {"since": since_ns, "key": key_id},
    )
    return cur.rowcount == 1
