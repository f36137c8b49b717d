"""What a verified job report bundle establishes: the result of `BundleVerifier.verify`.

Every figure says what it is: FLOPs as an estimate and a sound upper bound under a named FLOP
model version, recomputed by the verifier from the raw counters (not copied from the claim).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwatch.model.figures import LEGEND
from flopwatch.statements import TreeHead


@dataclass(frozen=True)
class NodeChain:
    """One node key's envelopes in the bundle, and the holes in its chain."""

    key_id: str
    node_id: str
    status: str  # "enrolled" or "revoked" (when the report was made)
    envelopes: int
    first_sequence: int
    last_sequence: int
    # Sequence ranges [first, last] between first_sequence and last_sequence not in the bundle:
    # records of other jobs, or records the collector never received. Reported, not failed.
    missing: tuple[tuple[int, int], ...]
    declared_gaps: int  # gap entries the node signed: GPU time it says it did not measure
    unmeasured_ns: int  # their total length

    @property
    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)


@dataclass(frozen=True)
class VerifiedReport:
    """A job's totals, recomputed from the bundle's envelopes, and what they rest on."""

    job_id: str
    flop_model_version: str
    flops_estimate: int  # FLOPs, estimate
    flops_upper: int  # FLOPs, sound upper bound
    gpu_intervals: int
    first_start_ns: int
    last_end_ns: int
    collector_key_id: str
    tree_head: TreeHead
    envelopes: int
    nodes: tuple[NodeChain, ...]
    warnings: tuple[str, ...]
    consistent_with: TreeHead | None  # the tree head you kept, if one was checked
    # Steps that checked nothing, and why: (step number, reason), e.g. step 12 without a kept
    # tree head. A skipped step is not a pass.
    skipped_steps: tuple[tuple[int, str], ...] = ()
    # The run, account and class the job's work was signed with: (run, account, class), each
    # distinct triple once. The run is the job's own id where the records declare none (records
    # from before runs existed too); an empty account means none was known.
    runs: tuple[tuple[str, str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        """A small summary for `flopwatch verify --json` (decimal FLOPs as JSON integers)."""
        kept = self.consistent_with
        return {
            "verified": True,
            "job": self.job_id,
            "flops": self.flops_estimate,
            "flops_upper": self.flops_upper,
            "legend": LEGEND,
            "flop_model_version": self.flop_model_version,
            "gpu_intervals": self.gpu_intervals,
            "interval": {
                "start_unix_s": self.first_start_ns / 1e9,
                "end_unix_s": self.last_end_ns / 1e9,
            },
            "envelopes": self.envelopes,
            "collector_key_id": self.collector_key_id,
            "tree_head": _head_json(self.tree_head),
            "consistent_with_tree_head": None if kept is None else _head_json(kept),
            "nodes": [
                {
                    "key_id": n.key_id,
                    "node_id": n.node_id,
                    "status": n.status,
                    "envelopes": n.envelopes,
                    "sequences": [n.first_sequence, n.last_sequence],
                    "missing_sequences": [list(r) for r in n.missing],
                    "declared_gaps": n.declared_gaps,
                    "unmeasured_s": n.unmeasured_ns / 1e9,
                }
                for n in self.nodes
            ],
            "warnings": list(self.warnings),
            "skipped_steps": [{"step": n, "reason": why} for n, why in self.skipped_steps],
            "runs": [
                {"run": run, "account": account or None, "class": workload_class}
                for run, account, workload_class in self.runs
            ],
        }


def _head_json(h: TreeHead) -> dict[str, object]:
    return {
        "tree_size": h.size,
        "root_hash": h.root.hex(),
        "timestamp_unix_s": h.timestamp_ns / 1e9,
        "log_id": h.log_id,
    }
