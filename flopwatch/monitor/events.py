"""What the monitor reports: problems with a log (each with a stable reason) and threshold
alerts. Both fire once, ever: the state store's primary keys decide, in the transaction that
records them. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Reasons a log or an entry is reported. The tree_tiles reasons (tiles_disagree_with_checkpoint,
# entry_not_in_tree, history_rewritten) and every RecordVerifier reason (bad_signature,
# flops_mismatch, ...) are reasons too.
MISSING_COSIGNATURES = "missing_cosignatures"  # the witness policy's quorum did not cosign
BAD_CHECKPOINT = "bad_checkpoint"  # malformed, unsigned by the log key, wrong origin
BAD_COSIGNATURE = "bad_cosignature"  # a policy witness's cosignature does not verify
ROLLBACK = "checkpoint_rollback"  # a smaller tree than one kept: history rewritten
UNREACHABLE = "log_unreachable"  # the log could not be read (network, HTTP status, size)
# A tile or entry bundle that does not parse: malformed_tile, malformed_entry_bundle
# (flopwatch.tlog.tiles).
UNKNOWN_NODE_KEY = "unknown_node_key"  # signed by a key neither enrolled earlier nor pinned
# Node key statements (flopwatch.monitor.node_keys); a statement whose signature or shape fails
# is bad_node_key_statement (flopwatch.statements).
REVOKED_NODE_KEY = "revoked_node_key"  # a record of a key revoked at or before its leaf
NODE_KEY_MISMATCH = "node_key_node_mismatch"  # a record of another node than its key's
NODE_KEY_NOT_PINNED = "node_key_not_pinned"  # the log enrolls a key the regulator did not pin
KEY_STATEMENT_CONFLICT = "node_key_statement_conflict"  # enrolled twice, revoked unenrolled...
CHAIN_FORK = "chain_fork"  # two records for one place in a node key's chain, in one log
CHAIN_FORK_ACROSS_LOGS = "chain_fork_across_logs"  # ... in two logs
DOUBLE_COUNTED = "double_counted"  # GPU time another counted record already covers

# Kinds of total, finest first.
KINDS = ("job", "run", "account", "entity")


@dataclass(frozen=True)
class Problem:
    """A log, a checkpoint or an entry that fails a check. `subject` says which one (with
    `log` and `reason` it is the problem's identity: reported once)."""

    log: str
    reason: str
    subject: str
    detail: str

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "log_problem",
            "log": self.log,
            "reason": self.reason,
            "subject": self.subject,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Alert:
    """A total crossed one of the regulator's thresholds (`threshold` names it)."""

    threshold: str
    kind: str  # one of KINDS
    key: str
    value: int  # the total's figure on the threshold's basis when it fired
    flops_estimate: int
    flops_upper: int

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "threshold_crossed",
            "threshold": self.threshold,
            "total_kind": self.kind,
            "key": self.key,
            "value": str(self.value),
            "flops_estimate": str(self.flops_estimate),
            "flops_upper": str(self.flops_upper),
        }
