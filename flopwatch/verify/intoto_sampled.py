"""Verify an in-toto compute-usage-sampled statement against a verified sampled report. Pure.

`flopwatch report --run RUN --sampled --format in-toto` (or `JOB --sampled`) writes a signed
in-toto Statement beside a sampled report (flopwatch.intoto.sampled_predicate). A
`SampledStatementVerifier` checks it only after the report itself verified
(`flopwatch.verify.sampled.SampledVerifier`): that verification establishes the collector key,
the signed claim and the guarantee; the statement must be signed by that key and state exactly
the claim's figures. `verify` runs the numbered steps of `SAMPLED_INTOTO_STEPS`.

The claim carries no time window, methods or classes: the statement states them from every
record of the scope, and step 7 checks them on the records the report opened. A window, method
or class list that leaves out a fraction `f` of the records is found with the probability the
report's samples give for a fraction `f` of misstated records; a window wider than the records,
or a method or class no record has, cannot be found by sampling (docs/regulators.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.identifiers import shown
from flopwatch.intoto.dsse_json import envelope_from_json
from flopwatch.intoto.facts import ScopeFacts
from flopwatch.intoto.predicate import rfc3339
from flopwatch.intoto.sampled_predicate import (
    GUARANTEE_CONFIDENCE,
    SCOPE_JOB,
    SCOPE_RUN,
    Guarantee,
    SampledUsage,
)
from flopwatch.intoto.statement import (
    DEFAULT_STATEMENT_LIMITS,
    INTOTO_PAYLOAD_TYPE,
    StatementLimits,
    Subject,
    parse_sampled_statement,
)
from flopwatch.keys import public_from_raw
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.statements import check_signed
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify.intoto import check_checkpoint, check_lineage, mismatch, step
from flopwatch.verify.sampled import SampledResult
from flopwatch.verify.sampled_format import (
    DEFAULT_SAMPLED_LIMITS,
    SampledLimits,
    SampledReport,
    Scope,
    detectable_fraction,
    in_run,
)
from flopwatch.verify.steps import Progress

SAMPLED_INTOTO_STEPS: tuple[str, ...] = (
    "envelope is DSSE JSON within limits",
    "statement is signed by the collector key of the verified sampled report",
    "statement is an in-toto Statement v1 with the compute-usage-sampled predicate",
    "evidence names this report (sha256), its samples, probes, challenge and guarantee",
    "checkpoint is signed by the collector key and is the report's tree head",
    "scope, figures, log window and reportedAt equal the report's signed claim",
    "every opened record lies in the stated window, with a stated method and class",
    "lineage: each declaration is the collector's, links the chain and is in the checkpoint's tree",
)


def guarantee_of(samples: int, probes: int) -> Guarantee:
    """What `samples` and `probes` find with `GUARANTEE_CONFIDENCE` (the fractions `flopwatch
    verify` prints for a sampled report)."""
    return Guarantee(
        GUARANTEE_CONFIDENCE,
        detectable_fraction(samples, GUARANTEE_CONFIDENCE),
        detectable_fraction(probes, GUARANTEE_CONFIDENCE),
    )


def share_counter(scope: Scope) -> ScopeFacts:
    """An empty `ScopeFacts` that counts the shares of `scope` (a job's, or a run's)."""

    def counts(share: pb.JobShare) -> bool:
        if scope.is_run:
            return in_run(share, scope.account, scope.run)
        return share.job_id == scope.job_id

    return ScopeFacts(counts)


@dataclass(frozen=True)
class VerifiedSampledStatement:
    """A statement that checked out against a verified sampled report, and what it is about."""

    subjects: tuple[Subject, ...]
    usage: SampledUsage
    origin: str  # the log's name in the checkpoint
    report_is_subject: bool  # whether one subject is the report itself


def _report_mismatch(what: str, stated: object, verified: object) -> VerificationError:
    return mismatch(what, stated, verified, "report")


class SampledStatementVerifier:
    """Checks statements against sampled reports that `SampledVerifier` verified."""

    def __init__(
        self,
        *,
        limits: StatementLimits = DEFAULT_STATEMENT_LIMITS,
        report_limits: SampledLimits = DEFAULT_SAMPLED_LIMITS,
        record_limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._limits = limits
        self._report_limits = report_limits
        self._record_limits = record_limits

    def verify(
        self,
        data: bytes,
        *,
        report_data: bytes,
        result: SampledResult,
        progress: Progress | None = None,
    ) -> VerifiedSampledStatement:
        """Verify the statement `data` (a JSON DSSE envelope) against `report_data`, the
        sampled report whose verification returned `result`. Raise StatementVerificationError
        at the first failed step."""
        note: list[str] = []
        with step(1, progress, note):
            envelope = envelope_from_json(data, self._limits.max_envelope_bytes)
            note.append(f"{len(data)} bytes, payload type {envelope.payload_type[:80]!r}")
        # 2. The key the report was verified under signed PAE(in-toto type, payload).
        with step(2, progress, note):
            key = public_from_raw(result.tree_head.public_key)
            check_signed(envelope, INTOTO_PAYLOAD_TYPE, key, "bad_statement_signature")
            note.append(f"collector key {result.collector_key_id}")
        with step(3, progress, note):
            subjects, usage = parse_sampled_statement(envelope.payload, self._limits)
            note.append(f"{len(subjects)} subject(s), scope {usage.scope}")
        # 4. The evidence is this report, with the samples, probes and challenge its claim
        #    signed, and the guarantee those give.
        digest = hashlib.sha256(report_data).hexdigest()
        with step(4, progress, note):
            self._check_evidence(usage, result, digest)
            g = usage.evidence.guarantee
            note.append(
                f"report sha256:{digest}; {result.samples} samples find {g.misstated:.3%} "
                f"misstated records, {result.probes} probes {g.withheld:.3%} withheld, "
                f"each with {g.confidence:.0%}"
            )
        with step(5, progress, note):
            origin = check_checkpoint(usage.checkpoint, result.tree_head, "report")
            note.append(f"log {origin!r}, tree size {result.tree_head.size}")
        report = SampledReport.from_bytes(report_data, self._report_limits)
        claim = report.unverified_claim(self._report_limits)  # its signature verified
        with step(6, progress, note):
            self._check_figures(usage, result, claim.created_ns)
            note.append(
                f"{claim.scope}: {usage.operations_estimate} FLOPs (estimate), "
                f"{usage.operations_upper} (sound upper bound), {usage.records} records"
            )
        with step(7, progress, note):
            opened = self._check_opened(usage, report, claim.scope)
            note.append(
                f"{opened} opened records from {rfc3339(usage.window_start_ns)} to "
                f"{rfc3339(usage.window_end_ns)}, methods {', '.join(usage.methods)}, "
                f"classes {', '.join(usage.workload_classes)}"
            )
        with step(8, progress, note):
            check_lineage(usage.lineage, (usage.account, usage.run), result.tree_head)
            note.append(
                f"{len(usage.lineage)} ancestor(s), each declaration in the log"
                if usage.lineage
                else "the run derives from no other run"
            )
        return VerifiedSampledStatement(
            subjects, usage, origin, any(s.sha256 == digest for s in subjects)
        )

    def _check_evidence(self, usage: SampledUsage, result: SampledResult, digest: str) -> None:
        e = usage.evidence
        if e.sha256 != digest:
            raise VerificationError(
                "wrong_report", f"the statement is about sampled report sha256:{e.sha256}"
            )
        if usage.collector_key_id != result.collector_key_id:
            raise _report_mismatch("collector key", usage.collector_key_id, result.collector_key_id)
        for what, stated, verified in (
            ("samples", e.samples, result.samples),
            ("probes", e.probes, result.probes),
            ("challenge", e.challenge, result.challenge.hex()),
        ):
            if stated != verified:
                raise _report_mismatch(what, stated, verified)
        expected = guarantee_of(result.samples, result.probes)
        if not e.guarantee.close_to(expected):
            raise _report_mismatch("guarantee", e.guarantee, expected)

    def _check_figures(self, usage: SampledUsage, result: SampledResult, created: int) -> None:
        scope = SCOPE_RUN if not result.job_id else SCOPE_JOB
        expected: list[tuple[str, object, object]] = [
            ("scope", usage.scope, scope),
            ("job", usage.job, result.job_id),
            ("FLOP model version", usage.flop_model_version, result.flop_model_version),
            ("operations (estimate)", usage.operations_estimate, result.flops_estimate),
            ("operations (upper bound)", usage.operations_upper, result.flops_upper),
            ("GPU intervals", usage.gpu_intervals, result.gpu_intervals),
            ("GPU nanoseconds", usage.gpu_ns, result.gpu_ns),
            ("records", usage.records, result.records),
            ("log window", (usage.first_leaf, usage.last_leaf), result.window),
            ("reported at", rfc3339(usage.reported_ns), rfc3339(created)),
        ]
        if scope == SCOPE_RUN:
            expected.append(
                ("run and account", (usage.run, usage.account), (result.run, result.account))
            )
        if usage.window_start_ns > usage.window_end_ns:
            raise _report_mismatch(
                "a window ending before it starts",
                rfc3339(usage.window_start_ns),
                rfc3339(usage.window_end_ns),
            )
        for what, stated, verified in expected:
            if stated != verified:
                raise _report_mismatch(what, stated, verified)

    def _check_opened(self, usage: SampledUsage, report: SampledReport, scope: Scope) -> int:
        """Each opened record (its node signature verified by the report's step 6): its
        intervals with work of the scope lie in the window, were measured by a stated method,
        and carry a stated class (and, for a job, the stated run and account)."""
        for o in report.openings:
            facts = share_counter(scope)
            facts.add(parse_payload(Envelope.from_bytes(o.envelope, self._record_limits).payload))
            where = f"opened record at log leaf {o.leaf_index}"
            if facts.first_start_ns is None or facts.last_end_ns is None:
                raise VerificationError("unrelated_envelope", f"{where} holds no work of {scope}")
            if facts.first_start_ns < usage.window_start_ns or (
                facts.last_end_ns > usage.window_end_ns
            ):
                raise VerificationError(
                    "statement_mismatch",
                    f"{where} has work from {rfc3339(facts.first_start_ns)} to "
                    f"{rfc3339(facts.last_end_ns)}, outside the stated window "
                    f"{rfc3339(usage.window_start_ns)} to {rfc3339(usage.window_end_ns)}",
                )
            if missing := sorted(facts.methods - set(usage.methods)):
                raise VerificationError(
                    "statement_mismatch", f"{where} was measured by {missing}, not a stated method"
                )
            if missing := sorted(set(facts.classes) - set(usage.workload_classes)):
                raise VerificationError(
                    "statement_mismatch", f"{where} declares class {missing}, not a stated one"
                )
            runs = {(x.account, x.run) for x in facts.labels}
            if runs != {(usage.account, usage.run)}:
                raise VerificationError(
                    "statement_mismatch",
                    f"{where} names run(s) {sorted(runs)[:4]!r}, the statement "
                    f"{shown(usage.run)!r} of account {shown(usage.account)!r}",
                )
        return len(report.openings)
