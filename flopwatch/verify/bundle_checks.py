"""The pure checks of `BundleVerifier` that need no trust input: inclusion proofs, chains,
double counting, totals. Each raises VerificationError with a stable reason code.

Chains and double counting rest on the rules the collector applies (`flopwatch.chain`,
`flopwatch.intervals`), so the verifier and the collector cannot disagree about either."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from flopwatch.chain import Link, Verdict, judge_after
from flopwatch.errors import VerificationError
from flopwatch.intervals import first_overlap
from flopwatch.keys import short_key_id
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.verify.bundle_format import Bundle, JobClaim, NodeKey
from flopwatch.verify.bundle_report import NodeChain
from flopwatch.verify.record import SUPPORTED_MODEL_VERSIONS, VerifiedRecord


def _short(key_id: str) -> str:
    return short_key_id(key_id)


def check_inclusion(bundle: Bundle) -> str:
    head = bundle.tree_head.head
    for e in bundle.entries:
        try:
            verify_inclusion(
                leaf_index=e.leaf_index,
                tree_size=head.size,
                leaf_hash=leaf_hash(e.envelope),
                proof=e.proof,
                root=head.root,
            )
        except VerificationError as err:
            raise VerificationError(err.reason, f"leaf {e.leaf_index}: {err.message}") from err
    return f"{len(bundle.entries)} proofs against tree size {head.size}"


def _link(r: VerifiedRecord) -> Link:
    return Link(r.sequence, r.digest, r.previous_digest)


def chain_of(recs: list[VerifiedRecord], node: NodeKey) -> NodeChain:
    """Walk one key's records in sequence order, judging each against the one before it as the
    collector judges a record against what it holds (`flopwatch.chain.judge`)."""
    recs = sorted(recs, key=lambda r: r.sequence)
    missing: list[tuple[int, int]] = []
    for prev, cur in itertools.pairwise(recs):
        verdict = judge_after(_link(prev), _link(cur))
        if verdict.verdict is Verdict.DUPLICATE:
            raise VerificationError(
                "duplicate_record", f"sequence {cur.sequence} of {_short(node.key_id)} twice"
            )
        if verdict.verdict is Verdict.FORK and verdict.conflict_at == cur.sequence:
            raise VerificationError(
                "chain_fork",
                f"two different records hold sequence {cur.sequence} of {_short(node.key_id)}",
            )
        if verdict.verdict is Verdict.FORK:
            raise VerificationError(
                "bad_chain",
                f"record {cur.sequence} of {_short(node.key_id)} does not link to record "
                f"{prev.sequence}",
            )
        if cur.sequence != prev.sequence + 1:
            missing.append((prev.sequence + 1, cur.sequence - 1))
    gaps = [g for r in recs for g in r.gaps]
    return NodeChain(
        key_id=node.key_id,
        node_id=node.node_id,
        status=node.status,
        envelopes=len(recs),
        first_sequence=recs[0].sequence,
        last_sequence=recs[-1].sequence,
        missing=tuple(missing),
        declared_gaps=len(gaps),
        unmeasured_ns=sum(g.end_ns - g.start_ns for g in gaps),
    )


def check_overlap(records: list[tuple[int, VerifiedRecord]]) -> str:
    by_device: dict[str, list[tuple[int, int, int]]] = {}
    for leaf, r in records:
        for m in r.measured:
            by_device.setdefault(m.device, []).append((m.start_ns, m.end_ns, leaf))
    count = 0
    for device, intervals in by_device.items():
        intervals.sort()  # by start, end, leaf: the first overlap names leaves in that order
        count += len(intervals)
        clash = first_overlap([(start, end) for start, end, _ in intervals])
        if clash is not None:
            leaf_a, leaf_b = (intervals[i][2] for i in clash)
            raise VerificationError(
                "double_counted",
                f"GPU {device}: intervals of leaves {leaf_a} and {leaf_b} overlap",
            )
    return f"{count} GPU intervals on {len(by_device)} device(s), none overlapping"


@dataclass(frozen=True)
class Totals:
    estimate: int
    upper: int
    intervals: int
    first_start_ns: int
    last_end_ns: int
    # Each distinct (run, account, class) the job's work was signed with; not compared.
    runs: tuple[tuple[str, str, str], ...] = field(default=(), compare=False)


def check_totals(records: list[tuple[int, VerifiedRecord]], claim: JobClaim) -> Totals:
    if claim.flop_model_version not in SUPPORTED_MODEL_VERSIONS:
        raise VerificationError(
            "unknown_model",
            f"FLOP model v{claim.flop_model_version} is not one this verifier knows",
        )
    estimate = upper = intervals = 0
    first, last = None, None
    runs: set[tuple[str, str, str]] = set()
    for leaf, r in records:
        if r.attestation.flop_model_version != claim.flop_model_version:
            raise VerificationError(
                "model_mismatch",
                f"leaf {leaf} uses FLOP model v{r.attestation.flop_model_version}, the claim "
                f"v{claim.flop_model_version}",
            )
        mine = [c for c in r.contributions if c.job_id == claim.job_id]
        if not mine:
            raise VerificationError(
                "unrelated_envelope", f"leaf {leaf} holds no work of job {claim.job_id!r}"
            )
        for c in mine:
            estimate += c.flops_estimate
            upper += c.flops_upper
            intervals += 1
            first = c.start_ns if first is None else min(first, c.start_ns)
            last = c.end_ns if last is None else max(last, c.end_ns)
            runs.add((c.run, c.account, c.workload_class.value))
    got = Totals(estimate, upper, intervals, first or 0, last or 0, tuple(sorted(runs)))
    want = Totals(
        claim.flops_estimate,
        claim.flops_upper,
        claim.gpu_intervals,
        claim.first_start_ns,
        claim.last_end_ns,
    )
    if got != want:
        raise VerificationError(
            "totals_mismatch",
            f"the collector claims {want.estimate} FLOPs (estimate) / {want.upper} FLOPs (upper "
            f"bound) over {want.intervals} GPU intervals; the envelopes give {got.estimate} / "
            f"{got.upper} over {got.intervals}",
        )
    return got
