"""SQLite side of retention (`RetentionStore`): which records may be archived, and dropping the
envelope bytes of archived ones. Functions take the store's connection and run inside the
caller's transaction; the decision is `flopwatch.collector.store.common.prunable`.

A pruned record keeps its row in `records` with an empty `envelope`; nothing else changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from flopwatch.collector.store import common
from flopwatch.collector.store.records import LogEntry, PruneCandidate


def archivable(
    db: sqlite3.Connection, before_ns: int, after_leaf: int, below_leaf: int, limit: int
) -> list[LogEntry]:
    rows = db.execute(
        "SELECT l.leaf_index, r.envelope, r.key_id, r.sequence FROM log_leaves l "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE l.leaf_index > ? AND l.leaf_index < ? AND r.received_at_ns < ? "
        "AND length(r.envelope) > 0 ORDER BY l.leaf_index LIMIT ?",
        (after_leaf, below_leaf, before_ns, limit),
    ).fetchall()
    return [LogEntry(int(r[0]), bytes(r[1]), r[2], int(r[3])) for r in rows]


def prune(
    db: sqlite3.Connection, candidates: Sequence[PruneCandidate], before_ns: int
) -> list[int]:
    """Drop the envelopes of the candidates `common.prunable` lets go; call inside a write
    transaction (so no commit changes a job's end between the check and the update). One
    indexed lookup per leaf and per job: no identifier passes through SQL JSON functions."""
    held: dict[int, bytes] = {}
    record: dict[int, tuple[str, int]] = {}
    for c in candidates:
        row = db.execute(
            "SELECT n.hash, l.key_id, l.sequence FROM log_leaves l "
            "JOIN log_nodes n ON n.level = 0 AND n.idx = l.leaf_index "
            "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
            "WHERE l.leaf_index = ? AND length(r.envelope) > 0",
            (c.leaf_index,),
        ).fetchone()
        if row is not None:
            held[c.leaf_index] = bytes(row[0])
            record[c.leaf_index] = (row[1], int(row[2]))
    ends = {}
    for job in sorted({j for c in candidates for j in c.jobs}):
        row = db.execute("SELECT last_end_ns FROM job_totals WHERE job_id = ?", (job,)).fetchone()
        if row is not None:
            ends[job] = int(row[0])
    pruned = common.prunable(candidates, held, ends, before_ns)
    db.executemany(
        "UPDATE records SET envelope = X'' WHERE key_id = ? AND sequence = ?",
        [record[leaf] for leaf in pruned],
    )
    return pruned
