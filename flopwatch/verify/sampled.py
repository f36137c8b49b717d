"""Verify a sampled job or run report offline. Pure: no I/O, no clock, no network.

A run report's claim names a run (account, run) instead of a job; everything below reads the
same with "run" for "job", each leaf then holding the run's figures in its record
(`sampled_format.run_sums`).

A `SampledVerifier` takes the same trust inputs as `BundleVerifier` (the collector key you pin,
and/or a tree head you kept), plus the least number of samples and probes you accept and your
challenge, if you gave the operator one. `verify(data)` runs the numbered steps of
`SAMPLED_STEPS` in order and returns a `SampledResult` or raises `BundleVerificationError`
naming the step and a stable reason code.

What a pass proves, with its probability, and what it does not: docs/regulators.md, "Compact
reports for large jobs and runs". In short: the claimed totals are the sums of a tree of records
ordered by log position; every opened record is a node-signed envelope in the log whose figures
recompute to its leaf; so if a fraction f of the tree's leaves were misstated, duplicated,
unrelated to the job or absent from the log, `samples` openings would have found one with
probability at least 1 - (1 - f)^samples; and if a fraction g of the log positions in the job's
window held records of the job left out of the tree, `probes` probes would have found one with
probability at least 1 - (1 - g)^probes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, KeyFileError, VerificationError
from flopwatch.keys import public_from_raw, short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.statements import SignedTreeHead, TreeHead, check_signed
from flopwatch.sumtree import check_path, leaf_node
from flopwatch.verify.record import SUPPORTED_MODEL_VERSIONS, RecordVerifier, VerifiedRecord
from flopwatch.verify.sampled_format import (
    DEFAULT_PROBES,
    DEFAULT_SAMPLED_LIMITS,
    DEFAULT_SAMPLES,
    SAMPLED_CLAIM_TYPE,
    SampledClaim,
    SampledLimits,
    SampledReport,
    detectable_fraction,
    probe_leaves,
    sample_positions,
    seed_of,
)
from flopwatch.verify.steps import Anchor, Progress, Skipped, Steps

SAMPLED_STEPS: tuple[str, ...] = (
    "report is well-formed and within limits",
    "collector key is the one you trust",
    "tree head is signed by the collector key",
    "sampled claim is signed by the collector key, names that tree head and your challenge, "
    "and opens enough positions",
    "the report opens exactly the positions drawn from the claim (Fiat-Shamir)",
    "every opened envelope is signed by its node key and its figures recompute from its counters",
    "every opened record's figures are its sum-tree leaf, whose path adds up to the claimed totals",
    "every opened envelope and probe is in the log (inclusion proofs against the tree head)",
    "no opened envelope was logged after its key was revoked",
    "no probed log position in the job's (run's) window holds its work left out of the sum tree",
    "log is consistent with the tree head you kept",
)


@dataclass(frozen=True)
class SampledResult:
    """What a verified sampled report shows; the guarantee figures are for 95 % confidence."""

    job_id: str  # empty in a run report
    flop_model_version: str
    flops_estimate: int
    flops_upper: int
    gpu_intervals: int
    gpu_ns: int
    records: int  # the job's records, as the collector's sum tree holds them
    window: tuple[int, int]  # the job's first and last log leaf
    samples: int
    probes: int
    opened: int  # distinct records opened (samples and probes that hit the job)
    probes_in_job: int  # probes that landed on a record of the job
    collector_key_id: str
    tree_head: TreeHead
    misstated_fraction_95: float  # a fraction of records misstated found with 95 %
    withheld_fraction_95: float  # a fraction of the window's positions withheld found with 95 %
    challenge: bytes = b""
    warnings: tuple[str, ...] = ()
    skipped_steps: tuple[tuple[int, str], ...] = ()
    consistent_with: TreeHead | None = None
    run: str = ""  # a run report: the run (account, run) it totals
    account: str = ""

    def to_json(self) -> dict[str, object]:
        scope: dict[str, object] = (
            {"run": self.run, "account": self.account} if not self.job_id else {}
        )
        return {
            "verified": True,
            "kind": "sampled",
            "scope": "run" if not self.job_id else "job",
            "job_id": self.job_id,
            **scope,
            "flop_model_version": self.flop_model_version,
            "flops_estimate": str(self.flops_estimate),
            "flops_upper": str(self.flops_upper),
            "gpu_intervals": self.gpu_intervals,
            "gpu_seconds": self.gpu_ns / 1e9,
            "records": self.records,
            "log_window": list(self.window),
            "samples": self.samples,
            "probes": self.probes,
            "records_opened": self.opened,
            "probes_in_job": self.probes_in_job,
            "misstated_fraction_detected_95": self.misstated_fraction_95,
            "withheld_fraction_detected_95": self.withheld_fraction_95,
            "challenge": self.challenge.hex(),
            "collector_key_id": self.collector_key_id,
            "tree_size": self.tree_head.size,
            "warnings": list(self.warnings),
            "skipped_steps": [{"step": n, "why": why} for n, why in self.skipped_steps],
        }


def scope_word(claim: SampledClaim) -> str:
    return "run" if claim.scope.is_run else "job"


class SampledVerifier:
    """Checks sampled reports against the trust a regulator brings; see the module doc."""

    def __init__(
        self,
        *,
        collector_key_id: str | None = None,
        trusted_tree_head: SignedTreeHead | None = None,
        min_samples: int = DEFAULT_SAMPLES,
        min_probes: int = DEFAULT_PROBES,
        challenge: bytes | None = None,
        limits: SampledLimits = DEFAULT_SAMPLED_LIMITS,
        record_limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._anchor = Anchor.of(collector_key_id, trusted_tree_head, "report")
        if min_samples < 1 or min_probes < 0:
            raise ConfigError("at least one sample, and no negative number of probes")
        self._min_samples = min_samples
        self._min_probes = min_probes
        self._challenge = challenge
        self._limits = limits
        self._record_limits = record_limits

    def verify(
        self, data: bytes, progress: Progress | None = None, *, skipped: Skipped | None = None
    ) -> SampledResult:
        """Verify a serialized sampled report; raise BundleVerificationError at the first failed
        step. `progress(step, detail)` follows each passed step, `skipped(step, why)` each step
        that checked nothing (without a `skipped` callback, `progress` gets "skipped: why", as
        the bundle verifier does)."""
        steps = Steps(progress, skipped)
        with steps.step(1) as note:
            report = SampledReport.from_bytes(data, self._limits)
            note.text = f"{len(report.openings)} records opened, {len(report.probes)} probes"
        head = report.tree_head.head
        with steps.step(2) as note:
            note.text = self._anchor.check(report.tree_head, "report")
        collector_key = public_from_raw(head.public_key)
        with steps.step(3) as note:
            report.tree_head.verify()
            note.text = f"tree size {head.size}, root {head.root.hex()[:16]}"
        with steps.step(4) as note:
            claim = self._check_claim(report, collector_key)
            note.text = (
                f"{claim.scope}: {claim.records} records in log leaves "
                f"{claim.root.lowest}..{claim.root.highest}; {claim.samples} samples, "
                f"{claim.probes} probes"
            )
        with steps.step(5) as note:
            probes_in_job = self._check_positions(report, claim)
            note.text = (
                f"{len(report.openings)} distinct records opened; {probes_in_job} of "
                f"{claim.probes} probes landed on records of the {scope_word(claim)}"
            )
        with steps.step(6) as note:
            records = self._check_records(report, claim)
            note.text = f"{len(records)} envelopes from {len({r.key_id for r in records})} keys"
        with steps.step(7) as note:
            self._check_leaves(report, claim, records)
            note.text = (
                f"{len(records)} paths to the root: estimate {claim.sums.estimate:.4e} FLOPs, "
                f"sound upper bound {claim.sums.upper:.4e} FLOPs, {claim.sums.intervals} GPU "
                "intervals"
            )
        with steps.step(8) as note:
            note.text = self._check_inclusion(report)
        with steps.step(9) as note:
            note.text = self._check_revocations(report, claim, records)
        with steps.step(10) as note:
            note.text = self._check_probes(report, claim)
        with steps.step(11) as note:
            if self._anchor.kept is None:
                note.skipped = "no tree head of yours given (--kept-tree-head)"
            else:
                note.text = self._anchor.consistency(report.tree_head, report.consistency, "report")
        s = claim.sums
        return SampledResult(
            job_id=claim.job_id,
            flop_model_version=claim.flop_model_version,
            flops_estimate=s.estimate,
            flops_upper=s.upper,
            gpu_intervals=s.intervals,
            gpu_ns=s.gpu_ns,
            records=claim.records,
            window=(claim.root.lowest, claim.root.highest),
            samples=claim.samples,
            probes=claim.probes,
            opened=len(report.openings),
            probes_in_job=probes_in_job,
            collector_key_id=head.log_id,
            tree_head=head,
            misstated_fraction_95=detectable_fraction(claim.samples),
            withheld_fraction_95=detectable_fraction(claim.probes),
            challenge=claim.challenge,
            skipped_steps=tuple(steps.skipped),
            consistent_with=None if self._anchor.kept is None else self._anchor.kept.head,
            run=claim.run,
            account=claim.account,
        )

    # -- steps -----------------------------------------------------------------------------
    def _check_claim(self, report: SampledReport, key: Ed25519PublicKey) -> SampledClaim:
        check_signed(report.claim, SAMPLED_CLAIM_TYPE, key, "bad_claim_signature")
        claim = SampledClaim.from_payload(report.claim.payload, self._limits)
        head = report.tree_head.head
        if (claim.tree_size, claim.root_hash) != (head.size, head.root):
            raise VerificationError(
                "claim_tree_head_mismatch",
                f"the claim is against tree size {claim.tree_size}, the report's head is size "
                f"{head.size}",
            )
        if claim.root.highest >= head.size:
            raise VerificationError(
                "leaf_outside_tree", f"leaf {claim.root.highest} >= tree size {head.size}"
            )
        if self._challenge is not None and claim.challenge != self._challenge:
            raise VerificationError(
                "challenge_mismatch",
                f"the claim answers challenge {claim.challenge.hex()[:64] or '(none)'}, not "
                f"yours ({self._challenge.hex()[:64]})",
            )
        if claim.samples < self._min_samples or claim.probes < self._min_probes:
            raise VerificationError(
                "too_few_samples",
                f"{claim.samples} samples and {claim.probes} probes; you asked for at least "
                f"{self._min_samples} and {self._min_probes}",
            )
        if claim.flop_model_version not in SUPPORTED_MODEL_VERSIONS:
            raise VerificationError(
                "unknown_model",
                f"FLOP model v{claim.flop_model_version} is not one this verifier knows",
            )
        return claim

    def _check_positions(self, report: SampledReport, claim: SampledClaim) -> int:
        """The openings are exactly the drawn positions; each probed leaf is opened or probed."""
        seed = seed_of(report.tree_head, report.claim.payload)
        sampled = set(sample_positions(seed, claim.samples, claim.records))
        probed = set(probe_leaves(seed, claim.probes, claim.root.lowest, claim.root.highest))
        positions = [o.position for o in report.openings]
        if any(b <= a for a, b in itertools.pairwise(positions)):
            raise VerificationError("unordered_entries", "openings are not in ascending position")
        leaves = [p.leaf_index for p in report.probes]
        if any(b <= a for a, b in itertools.pairwise(leaves)):
            raise VerificationError("unordered_entries", "probes are not in ascending leaf index")
        by_leaf = {o.leaf_index: o.position for o in report.openings}
        if len(by_leaf) != len(report.openings):
            raise VerificationError("duplicate_record", "two openings name the same log leaf")
        if missing := sorted(sampled - set(positions)):
            raise VerificationError(
                "missing_sample", f"sampled positions not opened: {missing[:8]}"
            )
        if extra := [
            o.position
            for o in report.openings
            if o.position not in sampled and o.leaf_index not in probed
        ]:
            raise VerificationError("unrequested_record", f"positions {extra[:8]} were not drawn")
        if extra_probes := sorted(set(leaves) - probed):
            raise VerificationError(
                "unrequested_probe", f"leaves {extra_probes[:8]} were not drawn"
            )
        if both := sorted(set(leaves) & set(by_leaf)):
            raise VerificationError("duplicate_record", f"leaves {both[:8]} opened and probed")
        if unanswered := sorted(probed - set(leaves) - set(by_leaf)):
            raise VerificationError(
                "missing_probe", f"probed log leaves not answered: {unanswered[:8]}"
            )
        return len(probed & set(by_leaf))

    def _check_records(self, report: SampledReport, claim: SampledClaim) -> list[VerifiedRecord]:
        keys: dict[str, Ed25519PublicKey] = {}
        for n in claim.nodes:
            try:
                keys[n.key_id] = public_from_raw(n.public_key)
            except (KeyFileError, ValueError) as err:
                raise VerificationError(
                    "malformed_claim", f"node key {short_key_id(n.key_id)}"
                ) from err
        verifier = RecordVerifier(trusted_keys=keys, limits=self._record_limits)
        out = []
        for o in report.openings:
            try:
                r = verifier.verify_bytes(o.envelope)
            except VerificationError as err:
                raise VerificationError(err.reason, f"leaf {o.leaf_index}: {err.message}") from err
            if r.attestation.flop_model_version != claim.flop_model_version:
                raise VerificationError(
                    "model_mismatch",
                    f"leaf {o.leaf_index} uses FLOP model v{r.attestation.flop_model_version}, "
                    f"the claim v{claim.flop_model_version}",
                )
            if not claim.scope.names(r.attestation):
                raise VerificationError(
                    "unrelated_envelope",
                    f"leaf {o.leaf_index} holds no work of {claim.scope}",
                )
            out.append(r)
        return out

    def _check_leaves(
        self, report: SampledReport, claim: SampledClaim, records: list[VerifiedRecord]
    ) -> None:
        for o, r in zip(report.openings, records, strict=True):
            got = claim.scope.sums(r.attestation)
            if got != o.sums:
                raise VerificationError(
                    "leaf_misstated",
                    f"leaf {o.leaf_index} (position {o.position}): the sum tree states "
                    f"{o.sums.estimate} / {o.sums.upper} FLOPs over {o.sums.intervals} GPU "
                    f"intervals, its counters give {got.estimate} / {got.upper} over "
                    f"{got.intervals}",
                )
            leaf = leaf_node(o.leaf_index, leaf_hash(o.envelope), o.sums)
            try:
                check_path(o.position, claim.records, leaf, o.path, claim.root)
            except VerificationError as err:
                raise VerificationError(err.reason, f"leaf {o.leaf_index}: {err.message}") from err

    def _check_inclusion(self, report: SampledReport) -> str:
        head = report.tree_head.head
        items: list[tuple[int, bytes, tuple[bytes, ...]]] = [
            (o.leaf_index, o.envelope, o.proof) for o in report.openings
        ]
        items += [(p.leaf_index, p.envelope, p.proof) for p in report.probes]
        for index, data, proof in items:
            try:
                verify_inclusion(
                    leaf_index=index,
                    tree_size=head.size,
                    leaf_hash=leaf_hash(data),
                    proof=proof,
                    root=head.root,
                )
            except VerificationError as err:
                raise VerificationError(err.reason, f"leaf {index}: {err.message}") from err
        return f"{len(items)} proofs against tree size {head.size}"

    def _check_revocations(
        self, report: SampledReport, claim: SampledClaim, records: list[VerifiedRecord]
    ) -> str:
        revoked = {n.key_id: n for n in claim.nodes if n.revoked}
        for o, r in zip(report.openings, records, strict=True):
            n = revoked.get(r.key_id)
            if n is not None and o.leaf_index >= n.revoked_at_tree_size:
                raise VerificationError(
                    "revoked_key",
                    f"key {short_key_id(r.key_id)} (node {n.node_id!r}) was revoked when the log "
                    f"had {n.revoked_at_tree_size} leaves; its envelope at leaf {o.leaf_index} "
                    "was logged after that",
                )
        return f"{len(revoked)} revoked key(s) among the signers" if revoked else "none revoked"

    def _check_probes(self, report: SampledReport, claim: SampledClaim) -> str:
        unreadable = 0
        for p in report.probes:
            try:
                att = parse_payload(Envelope.from_bytes(p.envelope, self._record_limits).payload)
            except VerificationError:
                unreadable += 1  # not a record at all: no work of any job
                continue
            if claim.scope.names(att):
                raise VerificationError(
                    "withheld_record",
                    f"log leaf {p.leaf_index} holds work of {claim.scope} and is not in "
                    "its sum tree: the claimed totals leave it out",
                )
        return f"{len(report.probes)} probed leaves hold other jobs' records" + (
            f" ({unreadable} not records)" if unreadable else ""
        )
