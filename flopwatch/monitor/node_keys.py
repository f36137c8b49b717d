"""A followed log's node keys, as its node key statements say, in log order. Pure.

The collector appends a statement signed by its log key (flopwatch.statements.NodeKeyStatement)
when it enrolls a node key, in the transaction that enrolls it, so before any record the key
signs; and when it revokes one, at the log size the statement names (`log_size`). The monitor
checks each statement with the log's key (the key its checkpoints are signed with) and learns
from it, entry by entry:

- A record signed by a key enrolled earlier in the log (or pinned) is verified and counted.
- A record signed by a key not enrolled at its position (nor pinned) stops the log there
  (`unknown_node_key`), as before: the collector logs an enrollment before any record of the
  key, so such a record is the collector's fault or from a log older than key statements; the
  log is followed on once the regulator pins the key (`node_keys`), and nothing is lost.
- A record of a key revoked in the log, at or past the size its revocation names, is a finding
  (`revoked_node_key`), not counted.
- A record whose node id is not the node its key was enrolled for: `node_key_node_mismatch`.

Pinned keys (the regulator's `node_keys` PEM file, optional): when given, the log may only
enroll keys in it; a statement enrolling another is a finding (`node_key_not_pinned`) and that
key is not learnt. Pinned keys count from the log's start (the regulator vouches for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.keys import public_from_raw, short_key_id
from flopwatch.monitor.events import (
    KEY_STATEMENT_CONFLICT,
    NODE_KEY_MISMATCH,
    NODE_KEY_NOT_PINNED,
    REVOKED_NODE_KEY,
    Problem,
)
from flopwatch.statements import ENROLLED, NodeKeyStatement
from flopwatch.verify import VerifiedRecord


@dataclass(frozen=True)
class LogKey:
    """A node key a log enrolled (at leaf `enrolled_leaf`), and revoked if it did."""

    key_id: str
    public_key: bytes
    node_id: str
    enrolled_leaf: int
    revoked_leaf: int | None = None  # the revocation statement's leaf
    revoked_from: int | None = None  # records of the key only at leaves below this


class LogKeys:
    """The node keys of log `log` known at the monitor's position: learnt from its statements
    (`learnt`, from the state) and pinned by the regulator (`pinned`, None: none)."""

    def __init__(
        self,
        log: str,
        learnt: Mapping[str, LogKey],
        pinned: Mapping[str, Ed25519PublicKey] | None,
    ) -> None:
        self.log = log
        self._learnt = dict(learnt)
        self._pinned = pinned
        # What the record verifier trusts; updated in place as keys are learnt.
        self.trusted: dict[str, Ed25519PublicKey] = dict(pinned or {})
        for k in self._learnt.values():
            self.trusted.setdefault(k.key_id, public_from_raw(k.public_key))

    def get(self, key_id: str) -> LogKey | None:
        return self._learnt.get(key_id)

    def learn(self, leaf: int, s: NodeKeyStatement) -> tuple[LogKey | None, Problem | None]:
        """Apply statement `s` at leaf `leaf`: the key as now known (to keep), or a finding."""
        subject = f"leaf {leaf}"
        held = self._learnt.get(s.key_id)
        key = short_key_id(s.key_id)
        if s.action == ENROLLED:
            if self._pinned is not None and s.key_id not in self._pinned:
                return None, self._problem(
                    NODE_KEY_NOT_PINNED,
                    subject,
                    f"the log enrolls key {key} of node {s.node_id!r}, which the regulator did "
                    "not pin (node_keys); its records are not counted",
                )
            if held is not None:
                return None, self._problem(
                    KEY_STATEMENT_CONFLICT,
                    subject,
                    f"key {key} is enrolled again (for node {s.node_id!r}; first at leaf "
                    f"{held.enrolled_leaf} for node {held.node_id!r})",
                )
            new = LogKey(s.key_id, s.public_key, s.node_id, leaf)
            self._learnt[s.key_id] = new
            self.trusted.setdefault(s.key_id, public_from_raw(s.public_key))
            return new, None
        if held is None:  # a revocation of a key the log never enrolled: pinned, or unknown
            if self._pinned is None or s.key_id not in self._pinned:
                return None, self._problem(
                    KEY_STATEMENT_CONFLICT, subject, f"key {key} is revoked but was never enrolled"
                )
            held = LogKey(s.key_id, s.public_key, s.node_id, leaf)
        if held.revoked_leaf is not None:
            return None, self._problem(
                KEY_STATEMENT_CONFLICT,
                subject,
                f"key {key} is revoked again (first at leaf {held.revoked_leaf})",
            )
        if s.log_size > leaf:
            return None, self._problem(
                KEY_STATEMENT_CONFLICT,
                subject,
                f"the revocation of key {key} names log size {s.log_size}, past its own leaf",
            )
        new = replace(held, revoked_leaf=leaf, revoked_from=s.log_size)
        self._learnt[s.key_id] = new
        return new, None

    def judge(self, leaf: int, record: VerifiedRecord) -> Problem | None:
        """A finding for a verified record at `leaf` that its key's statements rule out."""
        held = self._learnt.get(record.key_id)
        if held is None:
            return None  # pinned, never enrolled in the log (a log older than statements)
        key = short_key_id(record.key_id)
        if held.revoked_from is not None and leaf >= held.revoked_from:
            return self._problem(
                REVOKED_NODE_KEY,
                f"leaf {leaf}",
                f"key {key} of node {held.node_id!r} was revoked at log size "
                f"{held.revoked_from} (statement at leaf {held.revoked_leaf}); not counted",
            )
        if record.node_id != held.node_id:
            return self._problem(
                NODE_KEY_MISMATCH,
                f"leaf {leaf}",
                f"key {key} is enrolled for node {held.node_id!r}, the record says "
                f"{record.node_id[:80]!r}; not counted",
            )
        return None

    def _problem(self, reason: str, subject: str, detail: str) -> Problem:
        return Problem(self.log, reason, subject, detail)
