"""Node key statements at the collector: every enrollment and revocation of a node key goes into
the transparency log as a statement signed by the collector key
(flopwatch.statements.NodeKeyStatement), so a monitor learns a log's node keys from the log.

The store logs a statement in the very transaction that enrolls or revokes the key (by an
operator, a one-time token, or trust on first use), once `start` has given it the collector key:
an enrollment is therefore in the log before any record the key signs, and a revocation's
statement is the leaf at the log size it names. At start the collector also logs the statements
that keys enrolled or revoked without one lack (a log older than statements; idempotent).
"""

from __future__ import annotations

import logging

from flopwatch.collector.store.base import NodeKeyStore
from flopwatch.collector.store.key_rows import SignKeyStatement
from flopwatch.dsse import Signer
from flopwatch.statements import NodeKeyStatement

log = logging.getLogger(__name__)


def signer(key: Signer) -> SignKeyStatement:
    """Sign a statement with the collector key: the envelope bytes to log."""

    def sign(statement: NodeKeyStatement) -> bytes:
        return statement.sign(key).to_bytes()

    return sign


def start(store: NodeKeyStore, key: Signer) -> int:
    """Log key statements with `key` from now on, and those missing; return how many were."""
    store.log_key_statements(signer(key))
    done = store.log_missing_key_statements()
    if done:
        log.warning(
            "logged %d node key statement(s) for keys enrolled or revoked before statements "
            "were logged",
            done,
        )
    return done
