"""SQLite side of run lineage (flopwatch.collector.store.lineage_rows): declarations appended
to `run_lineage` and to the transparency log in one transaction. Nothing here commits."""

from __future__ import annotations

import sqlite3

from flopwatch.collector.store import lineage_rows
from flopwatch.collector.store.lineage_rows import DECLARATION_KEY_ID, Check, Declaration
from flopwatch.collector.store.sqlite import tlog
from flopwatch.lineage import Parent, RunKey


def parents(db: sqlite3.Connection) -> dict[RunKey, Parent]:
    return lineage_rows.parents(db.execute(lineage_rows.SELECT_LINEAGE))


def add_declaration(
    db: sqlite3.Connection, decl: Declaration, envelope: bytes, check: Check
) -> int:
    """Check the declaration against those held (`check` raises to refuse), keep it and log
    its envelope; return its leaf index."""

    def known(key: RunKey) -> bool:
        row = db.execute("SELECT 1 FROM run_totals WHERE account = ? AND run = ?", key).fetchone()
        return row is not None

    check(parents(db), known)
    n = int(db.execute("SELECT coalesce(max(n) + 1, 0) FROM run_lineage").fetchone()[0])
    leaf = tlog.append_leaves(db, [tlog.Leaf(DECLARATION_KEY_ID, n, envelope, frozenset())])
    db.execute(lineage_rows.INSERT_SQLITE, decl.values(n, envelope, leaf))
    return leaf


def declaration_leaf(db: sqlite3.Connection, key: RunKey) -> int | None:
    row = db.execute(
        "SELECT leaf_index FROM run_lineage WHERE account = ? AND run = ?", key
    ).fetchone()
    return None if row is None else int(row[0])
