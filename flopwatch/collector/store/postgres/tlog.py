"""PostgreSQL side of the transparency log (flopwatch.collector.log.translog): appends, nodes, job
evidence, tree heads.

Leaf indices are dense and never reused, so appends are serialized across every collector that
shares the database: `append_records` takes the log's transaction-scoped advisory lock, reads the
size and right edge, and writes the new nodes; the lock is held until COMMIT, so the next writer
reads the size this one left. The commit takes it last, after every other lock it needs, and
`note_revocation` takes it after the key's lock (the same order), so no two writers deadlock.

Functions take a cursor and run inside the caller's transaction; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from flopwatch.collector.log import translog
from flopwatch.collector.store import common
from flopwatch.collector.store.key_rows import KEY_STATEMENT_KEY_ID
from flopwatch.collector.store.lineage_rows import DECLARATION_KEY_ID
from flopwatch.collector.store.postgres.locks import Cur, lock_log
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
from flopwatch.merkle import leaf_hash
from flopwatch.verify.record import VerifiedRecord


def append_records(cur: Cur, scope: str, records: Sequence[VerifiedRecord]) -> None:
    """Log the records of a batch being committed, in order (their stored envelope bytes)."""
    if not records:
        return
    lock_log(cur, scope)
    size = log_size(cur)
    data = [r.envelope.to_bytes() for r in records]  # the bytes `records.envelope` holds
    new = translog.append(size, log_nodes(cur, translog.edge(size)), [leaf_hash(d) for d in data])
    with cur.copy("COPY log_nodes (level, idx, hash) FROM STDIN") as copy:
        for (level, idx), h in new.items():
            copy.write_row((level, idx, h))
    with cur.copy("COPY log_leaves (leaf_index, key_id, sequence) FROM STDIN") as copy:
        for n, r in enumerate(records):
            copy.write_row((size + n, r.key_id, r.sequence))
    with cur.copy(
        "COPY log_jobs (job_id, leaf_index, leaf_sums, flop_model_version) FROM STDIN"
    ) as copy:
        for n, r in enumerate(records):
            for job in sorted(r.sums.jobs):
                copy.write_row((job, size + n, *common.job_figures(r.sums, job)))
    with cur.copy(
        "COPY log_runs (account, run, leaf_index, leaf_sums, flop_model_version) FROM STDIN"
    ) as copy:
        for n, r in enumerate(records):
            for run in sorted(r.sums.runs):
                copy.write_row((*run, size + n, *common.run_figures(r.sums, run)))


def append_statement(cur: Cur, key_id: str, sequence: int, envelope: bytes) -> int:
    """Log one collector-signed statement (a lineage declaration, a node key statement) as
    the next leaf, named (key_id, sequence) in log_leaves; return its leaf index. The caller
    holds the log's lock (`lock_log`)."""
    size = log_size(cur)
    new = translog.append(size, log_nodes(cur, translog.edge(size)), [leaf_hash(envelope)])
    cur.executemany(
        "INSERT INTO log_nodes (level, idx, hash) VALUES (%s, %s, %s)",
        [(lv, i, h) for (lv, i), h in new.items()],
    )
    cur.execute(
        "INSERT INTO log_leaves (leaf_index, key_id, sequence) VALUES (%s, %s, %s)",
        (size, key_id, sequence),
    )
    return size


_BACKFILL_CHUNK = 1024


def backfill_runs(cur: Cur) -> int:
    """Index by run the leaves logged before `log_runs` existed (once, in the migration's
    transaction); return how many leaves were read. Archived, pruned envelopes cannot be read:
    their leaves stay unindexed, and a run report finds them as probes."""
    done = after = 0
    while True:
        cur.execute(
            "SELECT l.leaf_index, r.envelope FROM log_leaves l "
            "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
            "WHERE l.leaf_index >= %s ORDER BY l.leaf_index LIMIT %s",
            (after, _BACKFILL_CHUNK),
        )
        rows = cur.fetchall()
        if not rows:
            return done
        index = [
            (account, run, int(i))
            for i, envelope in rows
            for account, run in sorted(common.record_runs(bytes(envelope)))
        ]
        with cur.copy("COPY log_runs (account, run, leaf_index) FROM STDIN") as copy:
            for row in index:
                copy.write_row(row)
        after = int(rows[-1][0]) + 1
        done += len(rows)


def note_revocation(cur: Cur, scope: str, key_id: str) -> None:
    """Record the log size at a key's revocation (first revocation only)."""
    lock_log(cur, scope)
    cur.execute(
        "INSERT INTO log_revocations (key_id, log_size) "
        "SELECT %s, coalesce(max(leaf_index) + 1, 0) FROM log_leaves "
        "ON CONFLICT (key_id) DO NOTHING",
        (key_id,),
    )


def add_tree_head(cur: Cur, tree_size: int, timestamp_ns: int, data: bytes) -> None:
    cur.execute(
        "INSERT INTO tree_heads (tree_size, timestamp_ns, envelope) VALUES (%s, %s, %s) "
        "ON CONFLICT (tree_size) DO NOTHING",
        (tree_size, timestamp_ns, data),
    )


def log_size(cur: Cur) -> int:
    cur.execute("SELECT coalesce(max(leaf_index) + 1, 0) FROM log_leaves")
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def log_nodes(cur: Cur, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    if not nodes:
        return {}
    levels, indices = zip(*sorted(nodes), strict=True)
    cur.execute(
        "SELECT n.level, n.idx, n.hash FROM log_nodes n "
        "JOIN unnest(%s::integer[], %s::bigint[]) AS w (level, idx) "
        "ON n.level = w.level AND n.idx = w.idx",
        (list(levels), list(indices)),
    )
    return common.all_log_nodes(
        nodes, {(int(r[0]), int(r[1])): bytes(r[2]) for r in cur.fetchall()}
    )


def log_entries(cur: Cur, start: int, end: int) -> list[bytes]:
    cur.execute(
        # A leaf is a record's envelope, a run lineage declaration's (lineage_rows) or a node
        # key statement's (key_rows).
        "SELECT l.leaf_index, coalesce(r.envelope, d.envelope, k.envelope) FROM log_leaves l "
        "LEFT JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "LEFT JOIN run_lineage d ON l.key_id = %s AND d.n = l.sequence "
        "LEFT JOIN key_statements k ON l.key_id = %s AND k.n = l.sequence "
        "WHERE l.leaf_index >= %s AND l.leaf_index < %s "
        "AND coalesce(r.envelope, d.envelope, k.envelope) IS NOT NULL ORDER BY l.leaf_index",
        (DECLARATION_KEY_ID, KEY_STATEMENT_KEY_ID, start, end),
    )
    return common.dense_entries(start, end, [(int(r[0]), bytes(r[1])) for r in cur.fetchall()])


def leaf_index(cur: Cur, key_id: str, sequence: int) -> int | None:
    cur.execute(
        "SELECT leaf_index FROM log_leaves WHERE key_id = %s AND sequence = %s", (key_id, sequence)
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def latest_tree_head(cur: Cur) -> bytes | None:
    cur.execute("SELECT envelope FROM tree_heads ORDER BY tree_size DESC LIMIT 1")
    row = cur.fetchone()
    return None if row is None else bytes(row[0])


def add_published_checkpoint(
    cur: Cur, origin: str, tree_size: int, note: bytes, now_ns: int
) -> None:
    cur.execute(
        "INSERT INTO published_checkpoints (origin, tree_size, note, published_at_ns) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (origin) DO UPDATE "
        "SET tree_size = excluded.tree_size, note = excluded.note, "
        "published_at_ns = excluded.published_at_ns "
        "WHERE excluded.tree_size >= published_checkpoints.tree_size",
        (origin, tree_size, note, now_ns),
    )


def published_checkpoint(cur: Cur, origin: str) -> bytes | None:
    cur.execute("SELECT note FROM published_checkpoints WHERE origin = %s", (origin,))
    row = cur.fetchone()
    return None if row is None else bytes(row[0])


def job_evidence(
    cur: Cur, total: JobTotal, node: Callable[[str], NodeRecord | None]
) -> JobEvidence:
    """The job's logged records, their keys and revocations; call inside one snapshot."""
    cur.execute(
        "SELECT j.leaf_index, r.envelope, r.key_id, r.sequence FROM log_jobs j "
        "JOIN log_leaves l ON l.leaf_index = j.leaf_index "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE j.job_id = %s ORDER BY j.leaf_index",
        (total.job_id,),
    )
    entries = cur.fetchall()

    def revocations(key_ids: list[str]) -> list[Any]:
        cur.execute(
            "SELECT key_id, log_size FROM log_revocations WHERE key_id = ANY(%s)", (key_ids,)
        )
        return cur.fetchall()

    return common.job_evidence(total, entries, node, revocations, lambda: log_size(cur))


def scope_leaves(
    cur: Cur, scope: LeafScope, after_leaf: int, below_leaf: int, limit: int
) -> list[ScopeLeaf]:
    """A page of the scope's logged records: leaf index in (after_leaf, below_leaf), ascending,
    at most `limit` (keyset pagination on log_jobs' or log_runs' primary key), each with its
    stored leaf figures, or its envelope where it has none."""
    page = common.leaf_page(limit)
    if scope.is_run:
        cur.execute(
            SCOPE_LEAF_COLUMNS
            + "FROM log_runs j "
            + SCOPE_LEAF_JOINS
            + "WHERE j.account = %s AND j.run = %s AND j.leaf_index > %s AND j.leaf_index < %s "
            "ORDER BY j.leaf_index LIMIT %s",
            (scope.account, scope.run, after_leaf, below_leaf, page),
        )
    else:
        cur.execute(
            SCOPE_LEAF_COLUMNS
            + "FROM log_jobs j "
            + SCOPE_LEAF_JOINS
            + "WHERE j.job_id = %s AND j.leaf_index > %s AND j.leaf_index < %s "
            "ORDER BY j.leaf_index LIMIT %s",
            (scope.job_id, after_leaf, below_leaf, page),
        )
    return [common.scope_leaf(r) for r in cur.fetchall()]


def revoked_at(cur: Cur, key_ids: Collection[str]) -> dict[str, int]:
    """The log size at the revocation of each of `key_ids` that was revoked."""
    cur.execute(
        "SELECT key_id, log_size FROM log_revocations WHERE key_id = ANY(%s)", (sorted(key_ids),)
    )
    return {r[0]: int(r[1]) for r in cur.fetchall()}


def run_evidence(
    cur: Cur, total: RunTotal, node: Callable[[str], NodeRecord | None]
) -> RunEvidence:
    """The run's logged records, their keys and revocations; call inside one snapshot."""
    cur.execute(
        "SELECT j.leaf_index, r.envelope, r.key_id, r.sequence FROM log_runs j "
        "JOIN log_leaves l ON l.leaf_index = j.leaf_index "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE j.account = %s AND j.run = %s ORDER BY j.leaf_index",
        (total.account, total.run),
    )
    entries = cur.fetchall()

    def revocations(key_ids: list[str]) -> list[Any]:
        cur.execute(
            "SELECT key_id, log_size FROM log_revocations WHERE key_id = ANY(%s)", (key_ids,)
        )
        return cur.fetchall()

    return common.run_evidence(total, entries, node, revocations, lambda: log_size(cur))
