"""Verify an in-toto compute-usage statement against a verified job report bundle. Pure.

`flopwatch report --format in-toto` writes a signed in-toto Statement beside a bundle
(flopwatch.intoto). A `StatementVerifier` checks it only after the bundle itself verified: the
bundle's verification is what establishes the collector key and the job's figures (recomputed
from raw counters); the statement must be signed by that key and state exactly those figures.
`verify` runs the numbered steps of `INTOTO_STEPS` and returns a `VerifiedStatement` or raises
`StatementVerificationError` naming the step and a stable reason code.

What a pass adds to the bundle's: the statement is the collector's word, in a format in-toto
tooling reads, about the same job; its checkpoint is one a log follower (witness, monitor) can
hold the log to. A customer-supplied subject (a model's weights) is the collector's signed
statement that this compute is attributed to that artifact: nothing here can check what was
trained on what.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope
from flopwatch.errors import StatementVerificationError, VerificationError
from flopwatch.identifiers import shown
from flopwatch.intoto.dsse_json import envelope_from_json
from flopwatch.intoto.facts import JobFacts, job_facts
from flopwatch.intoto.predicate import ComputeUsage, ForeignClaim, LineageLink, rfc3339
from flopwatch.intoto.statement import (
    DEFAULT_STATEMENT_LIMITS,
    INTOTO_PAYLOAD_TYPE,
    StatementLimits,
    Subject,
    parse_statement,
)
from flopwatch.keys import public_from_raw
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.lineage import RunKey
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.statements import RunClaim, RunDeclaration, TreeHead, check_signed
from flopwatch.tlog.checkpoint import open_checkpoint, parse_checkpoint
from flopwatch.tlog.note import Ed25519Verifier
from flopwatch.verify.bundle_format import DEFAULT_BUNDLE_LIMITS, Bundle, BundleLimits
from flopwatch.verify.bundle_report import VerifiedReport
from flopwatch.verify.steps import Progress

INTOTO_STEPS: tuple[str, ...] = (
    "envelope is DSSE JSON within limits",
    "statement is signed by the collector key of the verified bundle",
    "statement is an in-toto Statement v1 with the compute-usage predicate",
    "predicate names this bundle (sha256) and its collector key",
    "checkpoint is signed by the collector key and is the bundle's tree head",
    "figures, window, run and account equal the verified bundle's",
    "lineage: each declaration is the collector's, links the chain and is in the checkpoint's tree",
)

_SHOWN = 160  # characters of a value shown in a message


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement that checked out, and what it is about."""

    subjects: tuple[Subject, ...]
    usage: ComputeUsage
    origin: str  # the log's name in the checkpoint
    bundle_is_subject: bool  # whether one subject is the bundle itself


@contextmanager
def step(n: int, progress: Progress | None, note: list[str]) -> Iterator[None]:
    """Statement verification step `n` (of this module or `intoto_sampled`): a refusal inside
    says its step; `progress` hears of the step passed, with the note it left."""
    note.clear()
    try:
        yield
    except VerificationError as e:
        raise StatementVerificationError(e.reason, e.message, n) from e
    if progress is not None:
        progress(n, note[0] if note else "")


def mismatch(
    what: str, stated: object, verified: object, evidence: str = "bundle"
) -> VerificationError:
    """A statement figure that is not the `evidence`'s (the bundle, or the sampled report)."""
    # Values from the statement are outside input: bounded and escaped (repr) in the message.
    return VerificationError(
        "statement_mismatch",
        f"the statement says {what} {repr(stated)[:_SHOWN]}, the {evidence} "
        f"{repr(verified)[:_SHOWN]}",
    )


class StatementVerifier:
    """Checks statements against bundles that `BundleVerifier` verified; see the module doc."""

    def __init__(
        self,
        *,
        limits: StatementLimits = DEFAULT_STATEMENT_LIMITS,
        bundle_limits: BundleLimits = DEFAULT_BUNDLE_LIMITS,
        record_limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._limits = limits
        self._bundle_limits = bundle_limits
        self._record_limits = record_limits

    def verify(
        self,
        data: bytes,
        *,
        bundle_data: bytes,
        report: VerifiedReport,
        progress: Progress | None = None,
    ) -> VerifiedStatement:
        """Verify the statement `data` (a JSON DSSE envelope) against `bundle_data`, the bundle
        whose verification returned `report`. Raise StatementVerificationError at the first
        failed step."""
        note: list[str] = []
        # 1. The envelope parses, within the size and count limits.
        with step(1, progress, note):
            envelope = envelope_from_json(data, self._limits.max_envelope_bytes)
            note.append(f"{len(data)} bytes, payload type {envelope.payload_type[:80]!r}")
        # 2. The key that signed the bundle's tree head (the key the regulator trusts) signed
        #    PAE(application/vnd.in-toto+json, payload) over the exact payload bytes.
        with step(2, progress, note):
            key = public_from_raw(report.tree_head.public_key)
            check_signed(envelope, INTOTO_PAYLOAD_TYPE, key, "bad_statement_signature")
            note.append(f"collector key {report.collector_key_id}")
        # 3. The payload is a Statement v1 whose predicate is a well-formed compute-usage one.
        with step(3, progress, note):
            subjects, usage = parse_statement(envelope.payload, self._limits)
            note.append(f"{len(subjects)} subject(s)")
        # 4. The predicate points at this bundle by its digest, and names the same key.
        digest = hashlib.sha256(bundle_data).hexdigest()
        with step(4, progress, note):
            if usage.bundle.sha256 != digest:
                raise VerificationError(
                    "wrong_bundle", f"the statement is about bundle sha256:{usage.bundle.sha256}"
                )
            if usage.collector_key_id != report.collector_key_id:
                raise mismatch("collector key", usage.collector_key_id, report.collector_key_id)
            note.append(f"bundle sha256:{digest}")
        # 5. The checkpoint is the collector's: a note signed by its key under the origin it
        #    names, of the very tree the bundle's inclusion proofs lead to.
        with step(5, progress, note):
            origin = check_checkpoint(usage.checkpoint, report.tree_head, "bundle")
            note.append(f"log {origin!r}, tree size {report.tree_head.size}")
        # 6. Every figure is the one the bundle's verification recomputed.
        with step(6, progress, note):
            bundle = Bundle.from_bytes(bundle_data, self._bundle_limits)
            self._check_figures(usage, report, bundle)
            note.append(
                f"job {usage.job!r}: {usage.operations_estimate} FLOPs (estimate), "
                f"{usage.operations_upper} (sound upper bound)"
            )
        # 7. Each ancestor of the run is linked by a lineage declaration signed by the collector
        #    key, whose log leaf (its envelope's RFC 6962 hash) the inclusion proof leads to the
        #    checkpoint's root; a parent on another collector ends the chain, with the digest and
        #    figures of the run claim the declaration carries.
        with step(7, progress, note):
            check_lineage(usage.lineage, (usage.account, usage.run), report.tree_head)
            note.append(
                f"{len(usage.lineage)} ancestor(s), each declaration in the log"
                if usage.lineage
                else "the run derives from no other run"
            )
        return VerifiedStatement(subjects, usage, origin, any(s.sha256 == digest for s in subjects))

    def _facts(self, bundle: Bundle, job_id: str) -> JobFacts:
        attestations = (
            parse_payload(Envelope.from_bytes(e.envelope, self._record_limits).payload)
            for e in bundle.entries
        )
        return job_facts(attestations, job_id)

    def _check_figures(self, usage: ComputeUsage, report: VerifiedReport, bundle: Bundle) -> None:
        claim = bundle.unverified_claim(self._bundle_limits)  # its signature verified (step 4)
        facts = self._facts(bundle, report.job_id)
        expected: list[tuple[str, object, object]] = [
            ("job", usage.job, report.job_id),
            ("FLOP model version", usage.flop_model_version, report.flop_model_version),
            ("operations (estimate)", usage.operations_estimate, report.flops_estimate),
            ("operations (upper bound)", usage.operations_upper, report.flops_upper),
            ("GPU intervals", usage.gpu_intervals, report.gpu_intervals),
            ("window start", rfc3339(usage.window_start_ns), rfc3339(report.first_start_ns)),
            ("window end", rfc3339(usage.window_end_ns), rfc3339(report.last_end_ns)),
            ("records", usage.records, report.envelopes),
            ("reported at", rfc3339(usage.reported_ns), rfc3339(claim.created_ns)),
            ("methods", list(usage.methods), list(facts.methods)),
            (
                "run, account and class",
                [(usage.run, usage.account, usage.workload_class)],
                [(x.run, x.account, x.workload_class) for x in facts.labels],
            ),
        ]
        for what, stated, verified in expected:
            if stated != verified:
                raise mismatch(what, stated, verified)


def check_checkpoint(text: str, head: TreeHead, what: str) -> str:
    """The checkpoint `text` is signed by the key of the verified tree head `head` under the
    origin it names, and is of that tree (the `what`'s); its origin."""
    data = text.encode("utf-8")
    checkpoint, _ = parse_checkpoint(data)
    key = Ed25519Verifier(checkpoint.origin, public_from_raw(head.public_key))
    signed = open_checkpoint(data, [key], origin=checkpoint.origin).checkpoint
    if (signed.size, signed.root) != (head.size, head.root):
        raise VerificationError(
            "checkpoint_mismatch",
            f"the checkpoint is of tree size {signed.size}, root {signed.root.hex()[:16]}; "
            f"the {what}'s tree head of size {head.size}, root {head.root.hex()[:16]}",
        )
    return checkpoint.origin


def _lineage_fail(message: str) -> VerificationError:
    return VerificationError("bad_lineage", message)


def check_lineage(lineage: Sequence[LineageLink], run: RunKey, head: TreeHead) -> None:
    """Every link of `lineage`, the ancestors of `run` (account, run), offline against the
    verified tree head `head`: see step 7. What it cannot check: a foreign
    parent's claim is signed by another collector, whose key the regulator pins separately
    (its digest and figures are checked here, its signature is not); and that the collector
    holds no declaration it left out (a run's declaration is a leaf of the log: a monitor
    following the log sees every one)."""
    key = public_from_raw(head.public_key)
    child = run
    for i, link in enumerate(lineage):
        where = f"lineage entry {i + 1} ({shown(link.run)!r})"
        if i and lineage[i - 1].parent_claim is not None:
            raise _lineage_fail(f"{where} follows a parent on another collector")
        try:
            decl = RunDeclaration.verified(Envelope.from_bytes(link.declaration), key)
        except VerificationError as e:
            raise _lineage_fail(f"{where}: the declaration: {e.message}") from e
        if (decl.account, decl.run) != child:
            raise _lineage_fail(
                f"{where}: the declaration is of run {shown(decl.run)!r} (account "
                f"{shown(decl.account)!r}), not of {shown(child[1])!r} "
                f"(account {shown(child[0])!r})"
            )
        if (decl.parent_account, decl.parent_run) != (link.account, link.run):
            raise _lineage_fail(f"{where}: the declaration names another parent")
        digest = leaf_hash(link.declaration)
        if digest.hex() != link.leaf_hash:
            raise _lineage_fail(f"{where}: the leaf hash is not the declaration's")
        try:
            verify_inclusion(
                leaf_index=link.leaf_index,
                tree_size=head.size,
                leaf_hash=digest,
                proof=[bytes.fromhex(h) for h in link.inclusion_proof],
                root=head.root,
            )
        except VerificationError as e:
            raise _lineage_fail(f"{where}: {e.message}") from e
        _check_foreign(where, decl, link.parent_claim)
        child = (link.account, link.run)


def _check_foreign(where: str, decl: RunDeclaration, claim: ForeignClaim | None) -> None:
    if not decl.parent_collector:
        if claim is not None:
            raise _lineage_fail(f"{where}: a parent of this collector with a foreign claim")
        return
    if claim is None:
        raise _lineage_fail(f"{where}: a parent on another collector without its claim")
    if claim.collector_key_id != decl.parent_collector:
        raise _lineage_fail(f"{where}: the claim's collector is not the declaration's")
    if hashlib.sha256(decl.parent_claim).hexdigest() != claim.sha256:
        raise _lineage_fail(f"{where}: the claim's digest is not the declared claim's")
    try:
        stated = RunClaim.unsigned_figures(decl.parent_claim)
    except VerificationError as e:
        raise _lineage_fail(f"{where}: the declared claim: {e.message}") from e
    if (stated.flops_estimate, stated.flops_upper) != (
        claim.operations_estimate,
        claim.operations_upper,
    ):
        raise _lineage_fail(f"{where}: the cumulative operations are not the claim's")
