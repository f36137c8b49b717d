"""PostgreSQL side of retention (`RetentionStore`): which records may be archived, and dropping
the envelope bytes of archived ones. Functions take a cursor and run inside the caller's
transaction; the decision is `flopwatch.collector.store.common.prunable`.

`prune` reads the jobs' totals FOR SHARE: a collector committing a record of one of those jobs
waits until the prune commits, so no job gets a new interval between the check and the update.
A pruned record keeps its row in `records` with an empty `envelope`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from flopwatch.collector.store import common
from flopwatch.collector.store.postgres.locks import Cur
from flopwatch.collector.store.records import LogEntry, PruneCandidate


def archivable(
    cur: Cur, before_ns: int, after_leaf: int, below_leaf: int, limit: int
) -> list[LogEntry]:
    cur.execute(
        "SELECT l.leaf_index, r.envelope, r.key_id, r.sequence FROM log_leaves l "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE l.leaf_index > %s AND l.leaf_index < %s AND r.received_at_ns < %s "
        "AND length(r.envelope) > 0 ORDER BY l.leaf_index LIMIT %s",
        (after_leaf, below_leaf, before_ns, limit),
    )
    return [LogEntry(int(r[0]), bytes(r[1]), r[2], int(r[3])) for r in cur.fetchall()]


def prune(cur: Cur, candidates: Sequence[PruneCandidate], before_ns: int) -> list[int]:
    if not candidates:
        return []
    jobs = sorted({j for c in candidates for j in c.jobs})
    cur.execute(
        "SELECT job_id, last_end_ns FROM job_totals WHERE job_id = ANY(%s) "
        "ORDER BY job_id FOR SHARE",
        (jobs,),
    )
    ends = {r[0]: int(r[1]) for r in cur.fetchall()}
    cur.execute(
        "SELECT l.leaf_index, n.hash, l.key_id, l.sequence FROM log_leaves l "
        "JOIN log_nodes n ON n.level = 0 AND n.idx = l.leaf_index "
        "JOIN records r ON r.key_id = l.key_id AND r.sequence = l.sequence "
        "WHERE l.leaf_index = ANY(%s) AND length(r.envelope) > 0",
        ([c.leaf_index for c in candidates],),
    )
    rows = cur.fetchall()
    held = {int(r[0]): bytes(r[1]) for r in rows}
    record = {int(r[0]): (r[2], int(r[3])) for r in rows}
    pruned = common.prunable(candidates, held, ends, before_ns)
    cur.executemany(
        "UPDATE records SET envelope = ''::bytea WHERE key_id = %s AND sequence = %s",
        [record[leaf] for leaf in pruned],
    )
    return pruned
