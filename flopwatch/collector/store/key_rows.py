"""Node key statements in a store: the rows of `key_statements` (both backends).

A node key statement (flopwatch.statements.NodeKeyStatement) is a row of `key_statements` and a
leaf of the transparency log: its leaf data is the statement's signed envelope, indexed in
`log_leaves` under the key id KEY_STATEMENT_KEY_ID (no node key id looks like it: those are hex
SHA-256) with the statement's number as its sequence. A key has at most one statement per
action (UNIQUE (key_id, action)): the table is also what says which enrollments and revocations
are logged.

A store logs a statement in the transaction that enrolls or revokes the key, once it is given a
`SignKeyStatement` (`NodeKeyStore.log_key_statements`); the collector gives it its key at start,
and `flopwatch nodes enroll|revoke` gives it the same key. Keys enrolled or revoked without one
(before this existed, or by code that holds no collector key) are logged by
`NodeKeyStore.log_missing_key_statements`, which the collector calls at start.
"""

from __future__ import annotations

from collections.abc import Callable

from flopwatch.collector.store.records import NodeRecord
from flopwatch.statements import ENROLLED, REVOKED, NodeKeyStatement

KEY_STATEMENT_KEY_ID = "node-key"

# The collector's signature over a statement: the serialized DSSE envelope to log.
SignKeyStatement = Callable[[NodeKeyStatement], bytes]

_INSERT = "INSERT INTO key_statements (n, key_id, action, at_ns, envelope, leaf_index) "
INSERT_SQLITE = _INSERT + "VALUES (?, ?, ?, ?, ?, ?)"
INSERT_POSTGRES = _INSERT + "VALUES (%s, %s, %s, %s, %s, %s)"


def missing(
    nodes: list[NodeRecord], logged: set[tuple[str, str]], revoked_at: dict[str, int]
) -> list[NodeKeyStatement]:
    """The statements to log for `nodes` that `logged` (key id, action) lacks: per key, in the
    order keys were enrolled, its enrollment, then its revocation (with the log's size recorded
    at the revocation, `revoked_at`)."""
    out = []
    for n in sorted(nodes, key=lambda n: (n.enrolled_at_ns, n.key_id)):
        if (n.key_id, ENROLLED) not in logged:
            out.append(NodeKeyStatement(n.node_id, n.public_key, ENROLLED, n.enrolled_at_ns))
        if n.status == REVOKED and (n.key_id, REVOKED) not in logged:
            at = n.revoked_at_ns if n.revoked_at_ns is not None else n.enrolled_at_ns
            size = revoked_at.get(n.key_id, 0)
            out.append(NodeKeyStatement(n.node_id, n.public_key, REVOKED, at, size))
    return out
