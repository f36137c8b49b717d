"""PostgreSQL side of run lineage (flopwatch.collector.store.lineage_rows): declarations
appended to `run_lineage` and to the transparency log in one transaction, under the log's lock
(taken first: it also serializes declarations, so two collectors never both pass the cycle
check). Nothing here commits."""

from __future__ import annotations

from flopwatch.collector.store import lineage_rows
from flopwatch.collector.store.lineage_rows import DECLARATION_KEY_ID, Check, Declaration
from flopwatch.collector.store.postgres import tlog
from flopwatch.collector.store.postgres.locks import Cur, lock_log
from flopwatch.lineage import Parent, RunKey


def parents(cur: Cur) -> dict[RunKey, Parent]:
    cur.execute(lineage_rows.SELECT_LINEAGE)
    return lineage_rows.parents(cur.fetchall())


def add_declaration(cur: Cur, scope: str, decl: Declaration, envelope: bytes, check: Check) -> int:
    """Check the declaration against those held (`check` raises to refuse), keep it and log
    its envelope; return its leaf index."""
    lock_log(cur, scope)

    def known(key: RunKey) -> bool:
        cur.execute("SELECT 1 FROM run_totals WHERE account = %s AND run = %s", key)
        return cur.fetchone() is not None

    check(parents(cur), known)
    cur.execute("SELECT coalesce(max(n) + 1, 0) FROM run_lineage")
    row = cur.fetchone()
    n = 0 if row is None else int(row[0])
    size = tlog.append_statement(cur, DECLARATION_KEY_ID, n, envelope)
    cur.execute(lineage_rows.INSERT_POSTGRES, decl.values(n, envelope, size))
    return size


def declaration_leaf(cur: Cur, key: RunKey) -> int | None:
    cur.execute("SELECT leaf_index FROM run_lineage WHERE account = %s AND run = %s", key)
    row = cur.fetchone()
    return None if row is None else int(row[0])
