"""PostgreSQL side of node key statements (flopwatch.collector.store.key_rows): appended to
`key_statements` and to the transparency log in the caller's transaction, under the log's lock.
Nothing here commits."""

from __future__ import annotations

from flopwatch.collector.store import key_rows
from flopwatch.collector.store.key_rows import KEY_STATEMENT_KEY_ID, SignKeyStatement
from flopwatch.collector.store.postgres import tlog
from flopwatch.collector.store.postgres.locks import Cur, lock_log
from flopwatch.collector.store.records import NodeRecord
from flopwatch.statements import REVOKED, NodeKeyStatement


def log_statement(
    cur: Cur, scope: str, statement: NodeKeyStatement, sign: SignKeyStatement
) -> int | None:
    """Sign and log `statement` unless its key's statement of that action is logged already;
    return its leaf index (None: logged before)."""
    lock_log(cur, scope)
    cur.execute(
        "SELECT 1 FROM key_statements WHERE key_id = %s AND action = %s",
        (statement.key_id, statement.action),
    )
    if cur.fetchone() is not None:
        return None
    envelope = sign(statement)
    cur.execute("SELECT coalesce(max(n) + 1, 0) FROM key_statements")
    row = cur.fetchone()
    n = 0 if row is None else int(row[0])
    size = tlog.append_statement(cur, KEY_STATEMENT_KEY_ID, n, envelope)
    cur.execute(
        key_rows.INSERT_POSTGRES,
        (n, statement.key_id, statement.action, statement.at_ns, envelope, size),
    )
    return size


def revocation(cur: Cur, node: NodeRecord) -> NodeKeyStatement:
    """The revocation statement of `node`, just revoked (its log size noted)."""
    cur.execute("SELECT log_size FROM log_revocations WHERE key_id = %s", (node.key_id,))
    row = cur.fetchone()
    at = node.revoked_at_ns if node.revoked_at_ns is not None else 0
    size = int(row[0]) if row is not None else tlog.log_size(cur)
    return NodeKeyStatement(node.node_id, node.public_key, REVOKED, at, size)


def log_missing(cur: Cur, scope: str, nodes: list[NodeRecord], sign: SignKeyStatement) -> int:
    """Log every statement `nodes` lack; return how many."""
    lock_log(cur, scope)
    cur.execute("SELECT key_id, action FROM key_statements")
    logged = {(str(k), str(a)) for k, a in cur.fetchall()}
    cur.execute("SELECT key_id, log_size FROM log_revocations")
    sizes = {str(k): int(s) for k, s in cur.fetchall()}
    done = 0
    for statement in key_rows.missing(nodes, logged, sizes):
        done += log_statement(cur, scope, statement, sign) is not None
    return done
