"""The sampled job report (proto/flopwatch/v1/bundle.proto, `SampledReport`) as checked classes,
and the rules that both its maker and its verifier follow: the job's figures in one record, the
Fiat-Shamir seed, the positions it opens, and the detection guarantee. Pure.

`SampledReport.from_bytes` parses within `SampledLimits` and checks the shape; it checks no
signature or proof (`flopwatch.verify.sampled.SampledVerifier` does).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import VerificationError
from flopwatch.runs import run_of, shown_account
from flopwatch.statements import SignedTreeHead, parse_message
from flopwatch.sumtree import NODE_BYTES, SUMS_BYTES, SumNode, Sums
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.v1 import bundle_pb2
from flopwatch.verify.bundle_format import (
    DEFAULT_BUNDLE_LIMITS,
    BundleLimits,
    Consistency,
    NodeKey,
    consistency_messages,
    consistency_of,
    identifier_text,
    proof_hashes,
)

SAMPLED_MEDIA_TYPE = "application/vnd.flopwatch.sampled-report.v1+protobuf"
SAMPLED_CLAIM_TYPE = "application/vnd.flopwatch.sampled-claim.v1+protobuf"
MALFORMED_REPORT = "malformed_report"
MALFORMED_CLAIM = "malformed_claim"
_SEED_DOMAIN = b"flopwatch sampled report v1\x00"

# Sum-tree positions opened and log positions probed by default: 3,000 samples detect a
# fraction of 0.1 % misstated records with probability 1 - 0.999^3000 = 95.0 %.
DEFAULT_SAMPLES = 3000
DEFAULT_PROBES = 3000
MAX_CHALLENGE_BYTES = 64


@dataclass(frozen=True)
class SampledLimits:
    """Bounds on what a verifier reads from a sampled report, before it reads it."""

    max_report_bytes: int = 1 << 30
    max_samples: int = 100_000  # sum-tree positions a claim may ask to open
    max_probes: int = 100_000  # log positions a claim may ask to probe
    max_path_nodes: int = 64  # a sum-tree path (a tree of up to 2^64 leaves)
    bundle: BundleLimits = DEFAULT_BUNDLE_LIMITS  # node keys, proof hashes, names

    @property
    def max_openings(self) -> int:
        return self.max_samples + self.max_probes


DEFAULT_SAMPLED_LIMITS = SampledLimits()


def _fail(message: str, reason: str = MALFORMED_REPORT) -> VerificationError:
    return VerificationError(reason, message)


def job_sums(att: pb.Attestation, job_id: str) -> Sums:
    """The figures of `job_id` in one record: its shares of each GPU interval it had work in,
    and those intervals' GPU-time. The collector's leaf and the verifier's recomputation."""
    estimate = upper = intervals = gpu_ns = 0
    for iv in att.intervals:
        for j in iv.jobs:
            if j.job_id == job_id:
                estimate += j.flops_estimate
                upper += j.flops_upper
                intervals += 1
                gpu_ns += max(0, iv.end_unix_ns - iv.start_unix_ns)
    return Sums(estimate, upper, intervals, gpu_ns)


def names_job(att: pb.Attestation, job_id: str) -> bool:
    return any(j.job_id == job_id for iv in att.intervals for j in iv.jobs)


def in_run(share: pb.JobShare, account: str, run: str) -> bool:
    """Whether a job's share counts for the run (`account`, `run`): its effective run
    (`flopwatch.runs.run_of`: the declared run, else the job id) and its account are those."""
    return share.account == account and run_of(share.job_id, share.run) == run


def run_sums(att: pb.Attestation, account: str, run: str) -> Sums:
    """The figures of the run (`account`, `run`) in one record: the shares of its jobs in each
    GPU interval (what the collector adds into the run's totals: estimate, upper bound, and one
    contribution per share), and the GPU-time of the intervals the run had work in, each
    interval once. The collector's leaf and the verifier's recomputation."""
    estimate = upper = intervals = gpu_ns = 0
    for iv in att.intervals:
        hit = False
        for j in iv.jobs:
            if in_run(j, account, run):
                estimate += j.flops_estimate
                upper += j.flops_upper
                intervals += 1
                hit = True
        if hit:
            gpu_ns += max(0, iv.end_unix_ns - iv.start_unix_ns)
    return Sums(estimate, upper, intervals, gpu_ns)


def names_run(att: pb.Attestation, account: str, run: str) -> bool:
    return any(in_run(j, account, run) for iv in att.intervals for j in iv.jobs)


@dataclass(frozen=True)
class Scope:
    """What a sampled report is about: one job (`job_id`), or one run (`account`, `run`, with
    `job_id` empty). Its figures in a record are what each sum-tree leaf states."""

    job_id: str = ""
    run: str = ""
    account: str = ""

    @property
    def is_run(self) -> bool:
        return not self.job_id

    def sums(self, att: pb.Attestation) -> Sums:
        if self.is_run:
            return run_sums(att, self.account, self.run)
        return job_sums(att, self.job_id)

    def names(self, att: pb.Attestation) -> bool:
        if self.is_run:
            return names_run(att, self.account, self.run)
        return names_job(att, self.job_id)

    def __str__(self) -> str:
        if self.is_run:
            return f"run {self.run!r} of account {shown_account(self.account)!r}"
        return f"job {self.job_id!r}"


# -- the guarantee ---------------------------------------------------------------------------
def detection_probability(fraction: float, samples: int) -> float:
    """Probability that `samples` uniform draws hit at least one of a `fraction` of bad items."""
    return 1.0 - (1.0 - fraction) ** samples


def detectable_fraction(samples: int, confidence: float = 0.95) -> float:
    """The smallest fraction of bad items `samples` draws find with `confidence`."""
    return 1.0 - (1.0 - confidence) ** (1.0 / samples) if samples else 1.0


def samples_for(fraction: float, confidence: float = 0.95) -> int:
    """Draws needed to find a `fraction` of bad items with `confidence`."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - fraction))


# -- the claim -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampledClaim:
    """What the collector signs: the job's totals as the root of its sum tree, the tree head,
    and how many positions the report opens."""

    job_id: str
    flop_model_version: str
    root: SumNode  # the sum tree's root: totals and the job's log window
    records: int  # leaves of the sum tree
    nodes: tuple[NodeKey, ...]
    tree_size: int
    root_hash: bytes
    created_ns: int
    samples: int
    probes: int
    challenge: bytes = b""
    run: str = ""  # with an empty job_id: the claim is about the run (account, run)
    account: str = ""

    @property
    def sums(self) -> Sums:
        return self.root.sums

    @property
    def scope(self) -> Scope:
        return Scope(self.job_id, self.run, self.account)

    def to_payload(self) -> bytes:
        s = self.root.sums
        m = bundle_pb2.SampledClaim(
            job_id=self.job_id,
            flop_model_version=self.flop_model_version,
            flops_estimate=str(s.estimate),
            flops_upper=str(s.upper),
            gpu_intervals=s.intervals,
            gpu_ns=s.gpu_ns,
            records=self.records,
            sum_root=self.root.to_bytes(),
            nodes=[n.to_message() for n in self.nodes],
            tree_size=self.tree_size,
            root_hash=self.root_hash,
            created_unix_ns=self.created_ns,
            samples=self.samples,
            probes=self.probes,
            challenge=self.challenge,
        )
        if self.scope.is_run:
            m.scope = bundle_pb2.SCOPE_RUN
            m.run = self.run
            m.account = self.account
        return m.SerializeToString(deterministic=True)

    def sign(self, signer: Signer) -> Envelope:
        return Envelope.sign(self.to_payload(), signer, SAMPLED_CLAIM_TYPE)

    @classmethod
    def from_payload(
        cls, payload: bytes, limits: SampledLimits = DEFAULT_SAMPLED_LIMITS
    ) -> SampledClaim:
        """Read a claim's payload (after its signature was checked)."""
        m = parse_message(bundle_pb2.SampledClaim(), payload, MALFORMED_CLAIM, "sampled claim")
        if len(m.nodes) > limits.bundle.max_nodes:
            raise _fail(
                f"{len(m.nodes)} node keys, limit {limits.bundle.max_nodes}", MALFORMED_CLAIM
            )
        if m.samples > limits.max_samples or m.probes > limits.max_probes:
            raise _fail(
                f"{m.samples} samples and {m.probes} probes, limits {limits.max_samples} and "
                f"{limits.max_probes}",
                MALFORMED_CLAIM,
            )
        if len(m.challenge) > MAX_CHALLENGE_BYTES:
            raise _fail(f"a challenge of {len(m.challenge)} bytes", MALFORMED_CLAIM)
        if m.scope == bundle_pb2.SCOPE_JOB:
            if not m.job_id or m.run or m.account:
                raise _fail("a job claim names no job, or a run", MALFORMED_CLAIM)
        elif m.scope == bundle_pb2.SCOPE_RUN:
            if m.job_id or not m.run:
                raise _fail("a run claim names no run, or a job", MALFORMED_CLAIM)
        else:
            raise _fail(f"unknown claim scope {m.scope}", MALFORMED_CLAIM)
        if m.records == 0:
            raise _fail("the claim names no record", MALFORMED_CLAIM)
        if len({n.key_id for n in m.nodes}) != len(m.nodes):
            raise _fail("the claim names a node key twice", MALFORMED_CLAIM)
        try:
            root = SumNode.from_bytes(m.sum_root)
        except VerificationError as e:
            raise _fail(f"sum-tree root: {e.message}", MALFORMED_CLAIM) from e
        stated = (m.flops_estimate, m.flops_upper, m.gpu_intervals, m.gpu_ns)
        s = root.sums
        if stated != (str(s.estimate), str(s.upper), s.intervals, s.gpu_ns):
            raise _fail("the claimed totals are not the sum-tree root's", MALFORMED_CLAIM)
        if m.records > root.highest - root.lowest + 1:
            raise _fail(
                f"{m.records} records in a log window of {root.highest - root.lowest + 1}",
                MALFORMED_CLAIM,
            )
        bl = limits.bundle
        return cls(
            job_id=identifier_text(m.job_id, "job id", bl, MALFORMED_CLAIM),
            run=identifier_text(m.run, "run", bl, MALFORMED_CLAIM),
            account=identifier_text(m.account, "account", bl, MALFORMED_CLAIM),
            flop_model_version=identifier_text(
                m.flop_model_version, "model version", bl, MALFORMED_CLAIM
            ),
            root=root,
            records=m.records,
            nodes=tuple(NodeKey.from_message(n, bl) for n in m.nodes),
            tree_size=m.tree_size,
            root_hash=m.root_hash,
            created_ns=m.created_unix_ns,
            samples=m.samples,
            probes=m.probes,
            challenge=m.challenge,
        )


# -- Fiat-Shamir -----------------------------------------------------------------------------
def seed_of(tree_head: SignedTreeHead, claim_payload: bytes) -> bytes:
    """The seed every position derives from: SHA-256 of the signed tree head and the claim."""
    th = tree_head.envelope.payload
    return hashlib.sha256(_SEED_DOMAIN + struct.pack(">I", len(th)) + th + claim_payload).digest()


def _draw(seed: bytes, tag: bytes, i: int, n: int) -> int:
    return int.from_bytes(hashlib.sha256(seed + tag + struct.pack(">I", i)).digest(), "big") % n


def sample_positions(seed: bytes, samples: int, records: int) -> list[int]:
    """The sum-tree positions to open: `samples` uniform draws (with replacement)."""
    return [_draw(seed, b"S", i, records) for i in range(samples)]


def probe_leaves(seed: bytes, probes: int, lowest: int, highest: int) -> list[int]:
    """The log leaves to probe: `probes` uniform draws in the window [lowest, highest] of the
    job's (or run's) records."""
    return [lowest + _draw(seed, b"P", i, highest - lowest + 1) for i in range(probes)]


# -- the report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Opening:
    """One record of the job, opened: its envelope and log proof, its sum-tree leaf and path."""

    position: int
    leaf_index: int
    envelope: bytes
    proof: tuple[bytes, ...]
    sums: Sums
    path: tuple[SumNode, ...]


@dataclass(frozen=True)
class Probe:
    """A probed log position that holds no record of the job."""

    leaf_index: int
    envelope: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class SampledReport:
    """A parsed sampled report. Nothing in it is verified yet."""

    tree_head: SignedTreeHead
    claim: Envelope
    openings: tuple[Opening, ...]
    probes: tuple[Probe, ...]
    consistency: tuple[Consistency, ...] = ()

    def unverified_claim(self, limits: SampledLimits = DEFAULT_SAMPLED_LIMITS) -> SampledClaim:
        """The claim's contents, its signature NOT checked: for its maker to display."""
        return SampledClaim.from_payload(self.claim.payload, limits)

    def to_bytes(self) -> bytes:
        msg = bundle_pb2.SampledReport(
            media_type=SAMPLED_MEDIA_TYPE,
            tree_head=self.tree_head.envelope.to_message(),
            claim=self.claim.to_message(),
            records=[
                bundle_pb2.SampledRecord(
                    position=o.position,
                    leaf_index=o.leaf_index,
                    envelope=o.envelope,
                    inclusion_proof=o.proof,
                    leaf_sums=o.sums.to_bytes(),
                    sum_path=[n.to_bytes() for n in o.path],
                )
                for o in self.openings
            ],
            probes=[
                bundle_pb2.LogProbe(
                    leaf_index=p.leaf_index, envelope=p.envelope, inclusion_proof=p.proof
                )
                for p in self.probes
            ],
            consistency=consistency_messages(self.consistency),
        )
        return msg.SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(
        cls, data: bytes, limits: SampledLimits = DEFAULT_SAMPLED_LIMITS
    ) -> SampledReport:
        """Parse a sampled report; VerificationError("malformed_report") on a bad shape."""
        if len(data) > limits.max_report_bytes:
            raise _fail(f"more than the limit, {limits.max_report_bytes} bytes")
        m = parse_message(bundle_pb2.SampledReport(), data, MALFORMED_REPORT, "the report")
        if m.media_type != SAMPLED_MEDIA_TYPE:
            raise _fail(f"not a sampled report (media type {m.media_type[:80]!r})")
        if len(m.records) + len(m.probes) > limits.max_openings:
            raise _fail(f"{len(m.records)} records and {len(m.probes)} probes: too many")
        if len(m.consistency) > limits.bundle.max_consistency_proofs:
            raise _fail(f"{len(m.consistency)} consistency proofs")
        if not m.HasField("tree_head") or not m.HasField("claim"):
            raise _fail("the report lacks a tree head or a claim")
        try:
            tree_head = SignedTreeHead.from_envelope(Envelope.from_message(m.tree_head))
            claim = Envelope.from_message(m.claim)
        except VerificationError as e:
            raise _fail(f"{e.reason}: {e.message}") from e
        bl = limits.bundle
        openings = tuple(
            Opening(
                r.position,
                r.leaf_index,
                r.envelope,
                proof_hashes(
                    list(r.inclusion_proof),
                    bl.max_proof_hashes,
                    f"leaf {r.leaf_index}",
                    MALFORMED_REPORT,
                ),
                _sums(r.leaf_sums, r.position),
                _path(r.sum_path, r.position, limits),
            )
            for r in m.records
        )
        probes = tuple(
            Probe(
                p.leaf_index,
                p.envelope,
                proof_hashes(
                    list(p.inclusion_proof),
                    bl.max_proof_hashes,
                    f"leaf {p.leaf_index}",
                    MALFORMED_REPORT,
                ),
            )
            for p in m.probes
        )
        consistency = consistency_of(
            m.consistency, bl.max_proof_hashes, "a proof", MALFORMED_REPORT
        )
        return cls(tree_head, claim, openings, probes, consistency)


def _sums(data: bytes, position: int) -> Sums:
    if len(data) != SUMS_BYTES:
        raise _fail(f"position {position}: leaf sums of {len(data)} bytes, not {SUMS_BYTES}")
    return Sums.from_bytes(data)


def _path(nodes: Iterable[bytes], position: int, limits: SampledLimits) -> tuple[SumNode, ...]:
    raw = list(nodes)
    if len(raw) > limits.max_path_nodes:
        raise _fail(f"position {position}: a sum-tree path of {len(raw)} nodes")
    if any(len(n) != NODE_BYTES for n in raw):
        raise _fail(f"position {position}: a sum-tree node is not {NODE_BYTES} bytes")
    try:
        return tuple(SumNode.from_bytes(n) for n in raw)
    except VerificationError as e:
        raise _fail(f"position {position}: {e.message}") from e


def is_sampled_report(data: bytes) -> bool:
    """Whether `data` begins as a sampled report does (its media type, field 1, first)."""
    t = SAMPLED_MEDIA_TYPE.encode()
    return data[: 2 + len(t)] == b"\x0a" + bytes([len(t)]) + t
