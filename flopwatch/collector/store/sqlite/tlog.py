"""SQLite side of the transparency log (flopwatch.collector.log.translog): appends, nodes, job
evidence, heads.

Functions take the store's connection; the writes run inside the caller's transaction
(`SQLiteStore.commit`, `revoke`, the schema migration at open) and nothing here commits, except
`snapshot`, which holds one read transaction open so several reads see the same state.

Tables (schema.py): log_nodes (level, idx, hash) holds every complete subtree, level 0 the
leaf hashes; log_leaves maps a leaf index to its record (key_id, sequence), whose stored envelope
bytes are the leaf data, and records.leaf_index maps back; log_jobs indexes leaves by job,
log_runs by run (account, run);
tree_heads keeps signed heads; log_revocations the log size at each revocation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flopwatch.attestation import parse_payload
from flopwatch.collector.log import translog
from flopwatch.collector.store import common
from flopwatch.collector.store.key_rows import KEY_STATEMENT_KEY_ID
from flopwatch.collector.store.lineage_rows import DECLARATION_KEY_ID
from flopwatch.collector.store.records import (
    JobEvidence,
    JobTotal,
    LeafScope,
    NodeRecord,
    RunEvidence,
    RunTotal,
    ScopeLeaf,
)
from flopwatch.collector.store.rows import SCOPE_LEAF_COLUMNS, SCOPE_LEAF_JOINS
from flopwatch.collector.store.sqlite.matching import keyed, select_matching
from flopwatch.dsse import Envelope
from flopwatch.errors import StoreError, VerificationError
from flopwatch.merkle import leaf_hash
from flopwatch.verify.record import VerifiedRecord
from flopwatch.verify.sums import RecordSums

# Records logged per read of the backfill queue.
_BACKFILL_CHUNK = 1024


@dataclass(frozen=True)
class Leaf:
    """A record to log: its chain position, its stored envelope bytes, the jobs it counts for."""

    key_id: str
    sequence: int
    data: bytes  # the stored envelope bytes
    jobs: frozenset[str]
    runs: frozenset[tuple[str, str]] = frozenset()  # (account, run) of its shares
    # What it adds up (a record being committed): its sum-tree leaf figures per job and run
    # (log_jobs, log_runs); None (a record logged by `backfill`): NULL, read from the envelope.
    sums: RecordSums | None = None


# -- writes ----------------------------------------------------------------------------------
def append_records(db: sqlite3.Connection, records: Sequence[VerifiedRecord]) -> int:
    """Log the records of a batch being committed, in order (their stored envelope bytes).

    Returns the first new leaf's index: record i of the batch is leaf first + i, which the
    caller stores in records.leaf_index as it inserts the record (no second write).
    """
    return append_leaves(
        db,
        [
            Leaf(
                r.key_id,
                r.sequence,
                r.envelope.to_bytes(),  # the same bytes sqlite_writes stores in `records`
                frozenset(r.sums.jobs),
                frozenset(r.sums.runs),
                r.sums,
            )
            for r in records
        ],
    )


def append_leaves(db: sqlite3.Connection, leaves: Sequence[Leaf]) -> int:
    """Append leaves in order: read the log's right edge, write the new nodes and index rows.
    Returns the index of the first leaf appended."""
    size = log_size(db)
    if not leaves:
        return size
    edge = log_nodes(db, translog.edge(size))
    new = translog.append(size, edge, [leaf_hash(leaf.data) for leaf in leaves])
    db.executemany(
        "INSERT INTO log_nodes VALUES (?, ?, ?)", [(lv, i, h) for (lv, i), h in new.items()]
    )
    db.executemany(
        "INSERT INTO log_leaves VALUES (?, ?, ?)",
        [(size + n, leaf.key_id, leaf.sequence) for n, leaf in enumerate(leaves)],
    )
    db.executemany(
        "INSERT INTO log_jobs (job_id, leaf_index, leaf_sums, flop_model_version) "
        "VALUES (?, ?, ?, ?)",
        [
            (job, size + n, *common.job_figures(leaf.sums, job))
            for n, leaf in enumerate(leaves)
            for job in sorted(leaf.jobs)
        ],
    )
    db.executemany(
        "INSERT INTO log_runs (account, run, leaf_index, leaf_sums, flop_model_version) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (*run, size + n, *common.run_figures(leaf.sums, run))
            for n, leaf in enumerate(leaves)
            for run in sorted(leaf.runs)
        ],
    )
    return size


def note_revocation(db: sqlite3.Connection, key_id: str) -> None:
    """Record the log size at a key's revocation (first revocation only)."""
    db.execute(
        "INSERT INTO log_revocations VALUES (?, ?) ON CONFLICT (key_id) DO NOTHING",
        (key_id, log_size(db)),
    )


def add_tree_head(db: sqlite3.Connection, tree_size: int, timestamp_ns: int, data: bytes) -> None:
    db.execute(
        "INSERT INTO tree_heads VALUES (?, ?, ?) ON CONFLICT (tree_size) DO NOTHING",
        (tree_size, timestamp_ns, data),
    )


def backfill(db: sqlite3.Connection) -> int:
    """Log the records the schema migration queued (held before the log existed), in received
    order; return how many. Their jobs come from their payloads, checked when they arrived."""
    done = 0
    while rows := db.execute(
        "SELECT b.n, r.key_id, r.sequence, r.envelope FROM log_backfill b "
        "JOIN records r USING (key_id, sequence) ORDER BY b.n LIMIT ?",
        (_BACKFILL_CHUNK,),
    ).fetchall():
        leaves = []
        for _, key_id, sequence, envelope in rows:
            data = bytes(envelope)
            leaves.append(Leaf(key_id, sequence, data, _jobs_of(data), common.record_runs(data)))
        first = append_leaves(db, leaves)
        db.executemany(
            "UPDATE records SET leaf_index = ? WHERE key_id = ? AND sequence = ?",
            [(first + n, leaf.key_id, leaf.sequence) for n, leaf in enumerate(leaves)],
        )
        db.execute("DELETE FROM log_backfill WHERE n <= ?", (rows[-1][0],))
        done += len(rows)
    return done


def backfill_runs(db: sqlite3.Connection) -> int:
    """Index by run the leaves logged before `log_runs` existed (call once, at the migration,
    before `backfill`); return how many leaves were read. Archived, pruned envelopes cannot be
    read: their leaves stay unindexed, and a run report finds them as probes."""
    done = after = 0
    while rows := db.execute(
        "SELECT l.leaf_index, r.envelope FROM log_leaves l "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE l.leaf_index >= ? ORDER BY l.leaf_index LIMIT ?",
        (after, _BACKFILL_CHUNK),
    ).fetchall():
        db.executemany(
            "INSERT OR IGNORE INTO log_runs (account, run, leaf_index) VALUES (?, ?, ?)",
            [
                (*run, int(i))
                for i, envelope in rows
                for run in sorted(common.record_runs(bytes(envelope)))
            ],
        )
        after = int(rows[-1][0]) + 1
        done += len(rows)
    return done


def _jobs_of(envelope: bytes) -> frozenset[str]:
    try:
        att = parse_payload(Envelope.from_bytes(envelope).payload)
    except VerificationError as e:
        raise StoreError(f"a stored record cannot be read back: {e}") from e
    return frozenset(j.job_id for iv in att.intervals for j in iv.jobs)


# -- reads -----------------------------------------------------------------------------------
@contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every read inside sees the same committed state."""
    db.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        if db.in_transaction:
            db.rollback()  # nothing was written; ending the read is all this does


def log_size(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT max(leaf_index) FROM log_leaves").fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def log_nodes(
    db: sqlite3.Connection, nodes: Collection[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    if not nodes:
        return {}
    rows = select_matching(
        db,
        "WITH w (level, idx) AS ({rows}) SELECT t.level, t.idx, t.hash FROM w "
        "JOIN log_nodes t ON t.level = w.level AND t.idx = w.idx",
        sorted(nodes),
    )
    return common.all_log_nodes(nodes, {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows})


def log_entries(db: sqlite3.Connection, start: int, end: int) -> list[bytes]:
    rows = db.execute(
        # A leaf is a record's envelope, a run lineage declaration's (lineage_rows) or a node
        # key statement's (key_rows).
        "SELECT l.leaf_index, coalesce(r.envelope, d.envelope, k.envelope) FROM log_leaves l "
        "LEFT JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "LEFT JOIN run_lineage d ON l.key_id = ? AND d.n = l.sequence "
        "LEFT JOIN key_statements k ON l.key_id = ? AND k.n = l.sequence "
        "WHERE l.leaf_index >= ? AND l.leaf_index < ? "
        "AND coalesce(r.envelope, d.envelope, k.envelope) IS NOT NULL ORDER BY l.leaf_index",
        (DECLARATION_KEY_ID, KEY_STATEMENT_KEY_ID, start, end),
    ).fetchall()
    return common.dense_entries(start, end, [(int(r[0]), bytes(r[1])) for r in rows])


def leaf_index(db: sqlite3.Connection, key_id: str, sequence: int) -> int | None:
    row = db.execute(
        "SELECT leaf_index FROM records WHERE key_id = ? AND sequence = ?", (key_id, sequence)
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def latest_tree_head(db: sqlite3.Connection) -> bytes | None:
    row = db.execute("SELECT envelope FROM tree_heads ORDER BY tree_size DESC LIMIT 1").fetchone()
    return None if row is None else bytes(row[0])


def add_published_checkpoint(
    db: sqlite3.Connection, origin: str, tree_size: int, note: bytes, now_ns: int
) -> None:
    db.execute(
        "INSERT INTO published_checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE "
        "SET tree_size = excluded.tree_size, note = excluded.note, "
        "published_at_ns = excluded.published_at_ns "
        "WHERE excluded.tree_size >= published_checkpoints.tree_size",
        (origin, tree_size, note, now_ns),
    )


def published_checkpoint(db: sqlite3.Connection, origin: str) -> bytes | None:
    row = db.execute(
        "SELECT note FROM published_checkpoints WHERE origin = ?", (origin,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def job_evidence(
    db: sqlite3.Connection, total: JobTotal, node: Callable[[str], NodeRecord | None]
) -> JobEvidence:
    """The job's logged records, their keys and revocations; call inside `snapshot`."""
    entries = db.execute(
        "SELECT j.leaf_index, r.envelope, r.key_id, r.sequence FROM log_jobs j "
        "JOIN log_leaves l ON l.leaf_index = j.leaf_index "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE j.job_id = ? ORDER BY j.leaf_index",
        (total.job_id,),
    ).fetchall()

    def revocations(key_ids: list[str]) -> list[Any]:
        return select_matching(
            db,
            "SELECT key_id, log_size FROM log_revocations WHERE key_id IN ({rows})",
            keyed(key_ids),
        )

    return common.job_evidence(total, entries, node, revocations, lambda: log_size(db))


def scope_leaves(
    db: sqlite3.Connection, scope: LeafScope, after_leaf: int, below_leaf: int, limit: int
) -> list[ScopeLeaf]:
    """A page of the scope's logged records: leaf index in (after_leaf, below_leaf), ascending,
    at most `limit` (keyset pagination on log_jobs' or log_runs' primary key), each with its
    stored leaf figures, or its envelope where it has none."""
    page = common.leaf_page(limit)
    if scope.is_run:
        query = (
            SCOPE_LEAF_COLUMNS
            + "FROM log_runs j "
            + SCOPE_LEAF_JOINS
            + "WHERE j.account = ? AND j.run = ? AND j.leaf_index > ? AND j.leaf_index < ? "
            "ORDER BY j.leaf_index LIMIT ?"
        )
        params: tuple[object, ...] = (scope.account, scope.run, after_leaf, below_leaf, page)
    else:
        query = (
            SCOPE_LEAF_COLUMNS
            + "FROM log_jobs j "
            + SCOPE_LEAF_JOINS
            + "WHERE j.job_id = ? AND j.leaf_index > ? AND j.leaf_index < ? "
            "ORDER BY j.leaf_index LIMIT ?"
        )
        params = (scope.job_id, after_leaf, below_leaf, page)
    return [common.scope_leaf(r) for r in db.execute(query, params).fetchall()]


def revoked_at(db: sqlite3.Connection, key_ids: Collection[str]) -> dict[str, int]:
    """The log size at the revocation of each of `key_ids` that was revoked."""
    rows = select_matching(
        db,
        "SELECT key_id, log_size FROM log_revocations WHERE key_id IN ({rows})",
        keyed(sorted(key_ids)),
    )
    return {r[0]: int(r[1]) for r in rows}


def run_evidence(
    db: sqlite3.Connection, total: RunTotal, node: Callable[[str], NodeRecord | None]
) -> RunEvidence:
    """The run's logged records, their keys and revocations; call inside `snapshot`."""
    entries = db.execute(
        "SELECT j.leaf_index, r.envelope, r.key_id, r.sequence FROM log_runs j "
        "JOIN log_leaves l ON l.leaf_index = j.leaf_index "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE j.account = ? AND j.run = ? ORDER BY j.leaf_index",
        (total.account, total.run),
    ).fetchall()

    def revocations(key_ids: list[str]) -> list[Any]:
        return select_matching(
            db,
            "SELECT key_id, log_size FROM log_revocations WHERE key_id IN ({rows})",
            keyed(key_ids),
        )

    return common.run_evidence(total, entries, node, revocations, lambda: log_size(db))
