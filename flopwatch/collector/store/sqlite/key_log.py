"""SQLite side of node key statements (flopwatch.collector.store.key_rows): appended to
`key_statements` and to the transparency log in the caller's transaction. Nothing here commits."""

from __future__ import annotations

import sqlite3

from flopwatch.collector.store import key_rows
from flopwatch.collector.store.key_rows import KEY_STATEMENT_KEY_ID, SignKeyStatement
from flopwatch.collector.store.records import NodeRecord
from flopwatch.collector.store.sqlite import tlog
from flopwatch.statements import REVOKED, NodeKeyStatement


def log_statement(
    db: sqlite3.Connection, statement: NodeKeyStatement, sign: SignKeyStatement
) -> int | None:
    """Sign and log `statement` unless its key's statement of that action is logged already;
    return its leaf index (None: logged before)."""
    held = db.execute(
        "SELECT 1 FROM key_statements WHERE key_id = ? AND action = ?",
        (statement.key_id, statement.action),
    ).fetchone()
    if held is not None:
        return None
    envelope = sign(statement)
    n = int(db.execute("SELECT coalesce(max(n) + 1, 0) FROM key_statements").fetchone()[0])
    leaf = tlog.append_leaves(db, [tlog.Leaf(KEY_STATEMENT_KEY_ID, n, envelope, frozenset())])
    db.execute(
        key_rows.INSERT_SQLITE,
        (n, statement.key_id, statement.action, statement.at_ns, envelope, leaf),
    )
    return leaf


def revocation(db: sqlite3.Connection, node: NodeRecord) -> NodeKeyStatement:
    """The revocation statement of `node`, just revoked (its log size noted)."""
    row = db.execute(
        "SELECT log_size FROM log_revocations WHERE key_id = ?", (node.key_id,)
    ).fetchone()
    at = node.revoked_at_ns if node.revoked_at_ns is not None else 0
    size = int(row[0]) if row is not None else tlog.log_size(db)
    return NodeKeyStatement(node.node_id, node.public_key, REVOKED, at, size)


def log_missing(db: sqlite3.Connection, nodes: list[NodeRecord], sign: SignKeyStatement) -> int:
    """Log every statement `nodes` lack; return how many."""
    logged = {(str(k), str(a)) for k, a in db.execute("SELECT key_id, action FROM key_statements")}
    sizes = {str(k): int(s) for k, s in db.execute("SELECT key_id, log_size FROM log_revocations")}
    done = 0
    for statement in key_rows.missing(nodes, logged, sizes):
        done += log_statement(db, statement, sign) is not None
    return done
