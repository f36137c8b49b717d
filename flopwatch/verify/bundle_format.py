"""The job report bundle (proto/flopwatch/v1/bundle.proto) as small checked domain classes.

`Bundle.from_bytes` parses a file within `BundleLimits` and checks its shape; it checks no
signature or proof (that is `flopwatch.verify.bundle.BundleVerifier`). `JobClaim` is what the
collector signs about a job. Generated protobuf classes stay at this edge. Pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import VerificationError
from flopwatch.identifiers import identifier_problem
from flopwatch.keys import short_key_id
from flopwatch.merkle import HASH_SIZE
from flopwatch.statements import JOB_CLAIM_TYPE, SignedTreeHead, parse_message
from flopwatch.v1 import bundle_pb2

BUNDLE_MEDIA_TYPE = "application/vnd.flopwatch.bundle.v1+protobuf"

MALFORMED_BUNDLE = "malformed_bundle"
MALFORMED_CLAIM = "malformed_claim"
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,59})")  # FLOPs, exact; 60 digits is far past 1e26
_STATUSES = frozenset({"enrolled", "revoked"})


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on what a verifier reads from a bundle, before it reads it."""

    max_bundle_bytes: int = 1 << 30
    max_entries: int = 1_000_000
    max_nodes: int = 100_000
    max_proof_hashes: int = 64  # an RFC 6962 audit path in a tree of up to 2^64 leaves
    max_consistency_proofs: int = 16
    max_string_chars: int = 256


DEFAULT_BUNDLE_LIMITS = BundleLimits()


def _fail(reason: str, message: str) -> VerificationError:
    return VerificationError(reason, message)


def proof_hashes(
    values: list[bytes] | tuple[bytes, ...], limit: int, what: str, reason: str
) -> tuple[bytes, ...]:
    """A proof's hashes read from a bundle or a sampled report: at most `limit`, each 32 bytes;
    else VerificationError(`reason`: the format's own malformed kind), `what` naming the proof."""
    if len(values) > limit:
        raise _fail(reason, f"{what} has {len(values)} hashes, limit {limit}")
    if any(len(h) != HASH_SIZE for h in values):
        raise _fail(reason, f"{what} holds a hash that is not {HASH_SIZE} bytes")
    return tuple(values)


def identifier_text(value: str, what: str, limits: BundleLimits, reason: str) -> str:
    """An identifier a bundle's or a sampled report's claim names (`flopwatch.identifiers`);
    empty passes, to be judged by the step that needs it. VerificationError(`reason`) else."""
    problem = identifier_problem(value, limits.max_string_chars) if value else None
    if problem is not None:
        raise _fail(reason, f"{what} {problem}")
    return value


@dataclass(frozen=True)
class NodeKey:
    """A node key as the collector held it: who it is, and whether and when it was revoked."""

    key_id: str
    node_id: str
    public_key: bytes
    status: str  # "enrolled" or "revoked"
    enrolled_at_ns: int
    revoked_at_ns: int = 0
    revoked_at_tree_size: int = 0  # with status "revoked": leaves from here on are after it

    @property
    def revoked(self) -> bool:
        return self.status == "revoked"

    def to_message(self) -> bundle_pb2.NodeKey:
        return bundle_pb2.NodeKey(
            key_id=self.key_id,
            node_id=self.node_id,
            public_key=self.public_key,
            status=self.status,
            enrolled_at_unix_ns=self.enrolled_at_ns,
            revoked_at_unix_ns=self.revoked_at_ns,
            revoked_at_tree_size=self.revoked_at_tree_size,
        )

    @classmethod
    def from_message(cls, m: bundle_pb2.NodeKey, limits: BundleLimits) -> NodeKey:
        if len(m.public_key) != 32 or hashlib.sha256(m.public_key).hexdigest() != m.key_id:
            raise _fail(
                MALFORMED_CLAIM, f"node key {short_key_id(m.key_id)!r} is not the key it names"
            )
        if m.status not in _STATUSES:
            raise _fail(
                MALFORMED_CLAIM, f"node key {short_key_id(m.key_id)} has status {m.status[:20]!r}"
            )
        return cls(
            key_id=m.key_id,
            node_id=identifier_text(m.node_id, "node id", limits, MALFORMED_CLAIM),
            public_key=m.public_key,
            status=m.status,
            enrolled_at_ns=m.enrolled_at_unix_ns,
            revoked_at_ns=m.revoked_at_unix_ns,
            revoked_at_tree_size=m.revoked_at_tree_size,
        )


@dataclass(frozen=True)
class JobClaim:
    """What the collector claims about one job, against one tree head. FLOPs are exact ints."""

    job_id: str
    flop_model_version: str
    flops_estimate: int
    flops_upper: int
    gpu_intervals: int
    first_start_ns: int
    last_end_ns: int
    leaf_indices: tuple[int, ...]
    nodes: tuple[NodeKey, ...]
    tree_size: int
    root: bytes
    created_ns: int

    def to_message(self) -> bundle_pb2.JobClaim:
        return bundle_pb2.JobClaim(
            job_id=self.job_id,
            flop_model_version=self.flop_model_version,
            flops_estimate=str(self.flops_estimate),
            flops_upper=str(self.flops_upper),
            gpu_intervals=self.gpu_intervals,
            first_start_unix_ns=self.first_start_ns,
            last_end_unix_ns=self.last_end_ns,
            leaf_indices=self.leaf_indices,
            nodes=[n.to_message() for n in self.nodes],
            tree_size=self.tree_size,
            root_hash=self.root,
            created_unix_ns=self.created_ns,
        )

    def sign(self, signer: Signer) -> Envelope:
        payload = self.to_message().SerializeToString(deterministic=True)
        return Envelope.sign(payload, signer, JOB_CLAIM_TYPE)

    @classmethod
    def from_payload(cls, payload: bytes, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS) -> JobClaim:
        """Read a claim's payload (after its signature was checked)."""
        m = parse_message(bundle_pb2.JobClaim(), payload, MALFORMED_CLAIM, "job claim")
        if len(m.leaf_indices) > limits.max_entries or len(m.nodes) > limits.max_nodes:
            raise _fail(MALFORMED_CLAIM, "more leaves or node keys than the limits allow")
        for name, value in (("estimate", m.flops_estimate), ("upper", m.flops_upper)):
            if not _DECIMAL.fullmatch(value):
                raise _fail(MALFORMED_CLAIM, f"claimed {name} {value[:64]!r} is not a decimal")
        if not m.job_id:
            raise _fail(MALFORMED_CLAIM, "the claim names no job")
        if len({n.key_id for n in m.nodes}) != len(m.nodes):
            raise _fail(MALFORMED_CLAIM, "the claim names a node key twice")
        return cls(
            job_id=identifier_text(m.job_id, "job id", limits, MALFORMED_CLAIM),
            flop_model_version=identifier_text(
                m.flop_model_version, "model version", limits, MALFORMED_CLAIM
            ),
            flops_estimate=int(m.flops_estimate),
            flops_upper=int(m.flops_upper),
            gpu_intervals=m.gpu_intervals,
            first_start_ns=m.first_start_unix_ns,
            last_end_ns=m.last_end_unix_ns,
            leaf_indices=tuple(m.leaf_indices),
            nodes=tuple(NodeKey.from_message(n, limits) for n in m.nodes),
            tree_size=m.tree_size,
            root=m.root_hash,
            created_ns=m.created_unix_ns,
        )


@dataclass(frozen=True)
class Entry:
    """One logged envelope: its leaf index, its exact bytes, its audit path."""

    leaf_index: int
    envelope: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Consistency:
    """RFC 6962 proof that the log of `old_size` is a prefix of the log of `new_size`."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]


def consistency_messages(proofs: Iterable[Consistency]) -> list[bundle_pb2.ConsistencyProof]:
    """Consistency proofs as a bundle or a sampled report carries them."""
    return [
        bundle_pb2.ConsistencyProof(old_size=c.old_size, new_size=c.new_size, hashes=c.hashes)
        for c in proofs
    ]


def consistency_of(
    messages: Iterable[bundle_pb2.ConsistencyProof], max_hashes: int, what: str, reason: str
) -> tuple[Consistency, ...]:
    """Consistency proofs read from a bundle or a sampled report, each of at most `max_hashes`
    hashes of the right size (`what` names one in a refusal, `reason` is its kind)."""
    return tuple(
        Consistency(c.old_size, c.new_size, proof_hashes(list(c.hashes), max_hashes, what, reason))
        for c in messages
    )


@dataclass(frozen=True)
class Bundle:
    """A parsed job report bundle. Nothing in it is verified yet."""

    tree_head: SignedTreeHead
    claim: Envelope
    entries: tuple[Entry, ...]
    consistency: tuple[Consistency, ...] = ()

    def unverified_claim(self, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS) -> JobClaim:
        """The claim's contents, its signature NOT checked: for its maker to display."""
        return JobClaim.from_payload(self.claim.payload, limits)

    def to_bytes(self) -> bytes:
        msg = bundle_pb2.Bundle(
            media_type=BUNDLE_MEDIA_TYPE,
            tree_head=self.tree_head.envelope.to_message(),
            claim=self.claim.to_message(),
            entries=[
                bundle_pb2.LoggedEnvelope(
                    leaf_index=e.leaf_index, envelope=e.envelope, inclusion_proof=e.proof
                )
                for e in self.entries
            ],
            consistency=consistency_messages(self.consistency),
        )
        return msg.SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS) -> Bundle:
        """Parse a bundle file; raise VerificationError("malformed_bundle") on a bad shape."""
        if len(data) > limits.max_bundle_bytes:
            raise _fail(MALFORMED_BUNDLE, f"more than the limit, {limits.max_bundle_bytes} bytes")
        m = parse_message(bundle_pb2.Bundle(), data, MALFORMED_BUNDLE, "the bundle")
        if m.media_type != BUNDLE_MEDIA_TYPE:
            raise _fail(
                MALFORMED_BUNDLE, f"not a flopwatch bundle (media type {m.media_type[:80]!r})"
            )
        if len(m.entries) > limits.max_entries:
            raise _fail(MALFORMED_BUNDLE, f"{len(m.entries)} entries, limit {limits.max_entries}")
        if len(m.consistency) > limits.max_consistency_proofs:
            raise _fail(MALFORMED_BUNDLE, f"{len(m.consistency)} consistency proofs")
        if not m.HasField("tree_head") or not m.HasField("claim"):
            raise _fail(MALFORMED_BUNDLE, "the bundle lacks a tree head or a claim")
        try:
            tree_head = SignedTreeHead.from_envelope(Envelope.from_message(m.tree_head))
            claim = Envelope.from_message(m.claim)
        except VerificationError as e:
            raise _fail(MALFORMED_BUNDLE, f"{e.reason}: {e.message}") from e
        entries = tuple(
            Entry(
                e.leaf_index,
                e.envelope,
                proof_hashes(
                    list(e.inclusion_proof),
                    limits.max_proof_hashes,
                    f"leaf {e.leaf_index}",
                    MALFORMED_BUNDLE,
                ),
            )
            for e in m.entries
        )
        consistency = consistency_of(
            m.consistency, limits.max_proof_hashes, "a consistency proof", MALFORMED_BUNDLE
        )
        return cls(tree_head, claim, entries, consistency)
