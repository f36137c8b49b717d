"""Make a sampled job or run report from its records and a view of the log. Pure: the log is read
through the `LogView` its caller passes (the collector's store, or a log in memory in tests).

Follows the rules of `flopwatch.verify.sampled_format` exactly as the verifier does: the same
leaf figures (`job_sums`, `run_sums`), the same seed, the same positions.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Protocol

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import VerificationError
from flopwatch.merkle import leaf_hash
from flopwatch.statements import SignedTreeHead
from flopwatch.sumtree import SumTree, leaf_node
from flopwatch.verify.bundle_format import Consistency, NodeKey
from flopwatch.verify.sampled_format import (
    Opening,
    Probe,
    SampledClaim,
    SampledReport,
    Scope,
    job_sums,
    probe_leaves,
    run_sums,
    sample_positions,
    seed_of,
)


class LogView(Protocol):
    """What the maker reads of the log, at the size of the report's tree head."""

    def entries(self, leaf_indices: Sequence[int]) -> dict[int, bytes]:
        """The exact leaf data at each index."""
        ...

    def inclusion_proofs(self, leaf_indices: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
        """Each index's RFC 6962 audit path to the tree head."""
        ...


def build_sampled(
    *,
    job_id: str = "",
    run: str = "",
    account: str = "",
    flop_model_version: str,
    records: Sequence[tuple[int, bytes]],
    log: LogView,
    tree_head: SignedTreeHead,
    nodes: tuple[NodeKey, ...],
    signer: Signer,
    created_ns: int,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency: tuple[Consistency, ...] = (),
) -> SampledReport:
    """The sampled report of `job_id` (or, with `job_id` empty, of the run (`account`, `run`)),
    whose records are `records` (leaf index, envelope bytes), in ascending leaf index.
    ValueError if there are none or they are out of order."""
    scope = Scope(job_id, run, account)
    if scope.is_run and not run:
        raise ValueError("a sampled report names a job or a run")
    if not scope.is_run and (run or account):
        raise ValueError("a sampled report names a job or a run, not both")
    if not records:
        raise ValueError(f"{scope} has no record")
    indices = [i for i, _ in records]
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise ValueError("records must be in strictly ascending log leaf index")
    sums = []
    for index, data in records:
        try:
            att = parse_payload(Envelope.from_bytes(data).payload)
        except VerificationError as e:
            raise ValueError(f"leaf {index} cannot be read: {e.message}") from e
        sums.append(run_sums(att, account, run) if scope.is_run else job_sums(att, job_id))
    tree = SumTree([leaf_node(i, leaf_hash(d), s) for (i, d), s in zip(records, sums, strict=True)])
    claim = SampledClaim(
        job_id=job_id,
        flop_model_version=flop_model_version,
        root=tree.root,
        records=tree.size,
        nodes=nodes,
        tree_size=tree_head.head.size,
        root_hash=tree_head.head.root,
        created_ns=created_ns,
        samples=samples,
        probes=probes,
        challenge=challenge,
        run=run,
        account=account,
    )
    signed = claim.sign(signer)
    seed = seed_of(tree_head, signed.payload)
    positions = set(sample_positions(seed, samples, tree.size))
    outside = set()
    for leaf in probe_leaves(seed, probes, tree.root.lowest, tree.root.highest):
        at = bisect.bisect_left(indices, leaf)
        if at < len(indices) and indices[at] == leaf:
            positions.add(at)
        else:
            outside.add(leaf)
    opened = sorted(positions)
    wanted = sorted({indices[p] for p in opened} | outside)
    proofs = log.inclusion_proofs(wanted)
    others = log.entries(sorted(outside))
    openings = tuple(
        Opening(
            position=p,
            leaf_index=indices[p],
            envelope=records[p][1],
            proof=proofs[indices[p]],
            sums=sums[p],
            path=tree.path(p),
        )
        for p in opened
    )
    probed = tuple(Probe(x, others[x], proofs[x]) for x in sorted(outside))
    return SampledReport(tree_head, signed, openings, probed, consistency)
