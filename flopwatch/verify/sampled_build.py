"""Make a sampled job or run report from its records and a view of the log. Pure: the log is read
through the `LogView` its caller passes (the collector's store, or a log in memory in tests).

Follows the rules of `flopwatch.verify.sampled_format` exactly as the verifier does: the same
leaf figures (`job_sums`, `run_sums`), the same seed, the same positions.

`build_sampled` holds every record in memory; `build_sampled_streamed` makes the same report,
byte for byte, from two passes over the records in log order, holding only the sum tree's stack
(O(log n) nodes), the opened records and their paths (O(k log n)): what the collector runs, so
a run of billions of records fits in memory. Its records may come as figures (`LeafFigures`:
what the collector stored for the leaf at commit) instead of envelopes: then only the drawn
records' envelopes are read (`envelopes`), and each must give exactly the figures its leaf
states.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import VerificationError
from flopwatch.merkle import leaf_hash
from flopwatch.statements import SignedTreeHead
from flopwatch.sumtree import StreamedTree, SumNode, Sums, SumTree, leaf_node
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


class LeafFigures(NamedTuple):
    """A record as its sum-tree leaf states it, without its envelope: its log leaf index, its
    RFC 6962 leaf hash, the scope's figures in it and its FLOP model version."""

    leaf_index: int
    log_leaf_hash: bytes
    sums: Sums
    flop_model_version: str


# A record as `build_sampled_streamed` reads it: (leaf index, envelope bytes), or its figures.
StreamedRecord = tuple[int, bytes] | LeafFigures


def _leaf(scope: Scope, index: int, data: bytes) -> tuple[SumNode, Sums, str]:
    """The record's sum-tree leaf, its figures for the scope and its FLOP model version."""
    try:
        att = parse_payload(Envelope.from_bytes(data).payload)
    except VerificationError as e:
        raise ValueError(f"leaf {index} cannot be read: {e.message}") from e
    sums = run_sums(att, scope.account, scope.run) if scope.is_run else job_sums(att, scope.job_id)
    return leaf_node(index, leaf_hash(data), sums), sums, att.flop_model_version


def _read(
    scope: Scope, records: Iterable[StreamedRecord]
) -> Iterable[tuple[int, bytes | None, SumNode, Sums, str]]:
    """Each record's leaf index, envelope (None: given as figures), leaf, figures and FLOP
    model version, checking that leaf indices strictly increase."""
    last = -1
    out: tuple[int, bytes | None, SumNode, Sums, str]
    for record in records:
        if isinstance(record, LeafFigures):
            index = record.leaf_index
            leaf = leaf_node(index, record.log_leaf_hash, record.sums)
            out = (index, None, leaf, record.sums, record.flop_model_version)
        else:
            index, data = record
            out = (index, data, *_leaf(scope, index, data))
        if index <= last:
            raise ValueError("records must be in strictly ascending log leaf index")
        last = index
        yield out


def build_sampled_streamed(
    *,
    job_id: str = "",
    run: str = "",
    account: str = "",
    records: Callable[[], Iterable[StreamedRecord]],
    log: LogView,
    tree_head: SignedTreeHead,
    nodes: Callable[[], tuple[NodeKey, ...]],
    signer: Signer,
    created_ns: int,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency: tuple[Consistency, ...] = (),
    envelopes: Callable[[Sequence[int]], dict[int, bytes]] | None = None,
) -> SampledReport:
    """`build_sampled`'s report, from `records()` called twice, each time iterating the same
    records in ascending leaf index: (leaf index, envelope bytes), or `LeafFigures`. The
    envelopes of drawn records given as figures are read with `envelopes` (default
    `log.entries`), after the second pass. `nodes` is called once the first pass is over (the
    keys that signed them). The records' FLOP model version is theirs (ValueError unless they
    all have one). ValueError also if there are none, they are out of order, the second pass
    differs from the first, or a drawn record's envelope does not give the figures its leaf
    was made from."""
    scope = Scope(job_id, run, account)
    if scope.is_run and not run:
        raise ValueError("a sampled report names a job or a run")
    if not scope.is_run and (run or account):
        raise ValueError("a sampled report names a job or a run, not both")
    # Pass 1: the root.
    scan = StreamedTree()
    versions = set()
    for _, _, leaf, _, version in _read(scope, records()):
        scan.push(leaf)
        versions.add(version)
    if not scan.size:
        raise ValueError(f"{scope} has no record")
    if len(versions) != 1:
        raise ValueError(f"the records use FLOP model versions {sorted(versions)}")
    root = scan.finish()
    claim = SampledClaim(
        job_id=job_id,
        flop_model_version=versions.pop(),
        root=root,
        records=scan.size,
        nodes=nodes(),
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
    positions = set(sample_positions(seed, samples, scan.size))
    probed = set(probe_leaves(seed, probes, root.lowest, root.highest))
    # Pass 2: the same leaves again, keeping the drawn positions and the probed leaves held.
    tree = StreamedTree()
    held: dict[int, tuple[int, bytes | None, SumNode, Sums, str]] = {}
    for record in _read(scope, records()):
        index, leaf = record[0], record[2]
        keep = tree.size in positions or index in probed
        position = tree.push(leaf, keep=keep)
        if keep:
            held[position] = record
            probed.discard(index)
    if tree.finish() != root or tree.size != scan.size:
        raise ValueError("the records changed between the two passes")
    kept = _with_envelopes(scope, held, envelopes or log.entries)
    outside = sorted(probed)
    opened = sorted(kept)
    proofs = log.inclusion_proofs(sorted({kept[p][0] for p in opened} | probed))
    others = log.entries(outside)
    openings = tuple(
        Opening(
            position=p,
            leaf_index=kept[p][0],
            envelope=kept[p][1],
            proof=proofs[kept[p][0]],
            sums=kept[p][2],
            path=tree.path(p),
        )
        for p in opened
    )
    return SampledReport(
        tree_head,
        signed,
        openings,
        tuple(Probe(x, others[x], proofs[x]) for x in outside),
        consistency,
    )


def _with_envelopes(
    scope: Scope,
    held: dict[int, tuple[int, bytes | None, SumNode, Sums, str]],
    envelopes: Callable[[Sequence[int]], dict[int, bytes]],
) -> dict[int, tuple[int, bytes, Sums]]:
    """The drawn records, each with its envelope: read for those given as figures, and each
    checked to give exactly the leaf and FLOP model version its figures did."""
    wanted = sorted(r[0] for r in held.values() if r[1] is None)
    read = envelopes(wanted) if wanted else {}
    out = {}
    for position, (index, given, leaf, sums, version) in held.items():
        data = read[index] if given is None else given
        if given is None and _leaf(scope, index, data) != (leaf, sums, version):
            raise ValueError(f"leaf {index}: its envelope does not give the figures stored for it")
        out[position] = (index, data, sums)
    return out
