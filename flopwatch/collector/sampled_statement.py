"""The in-toto statement of a sampled report: what `flopwatch report --run RUN --sampled
--format in-toto` (or `report JOB --sampled --format in-toto`) writes beside the report
(flopwatch.intoto.sampled_predicate; docs/compute-usage-sampled-predicate.md).

Its figures are the sampled report's signed claim: the totals, records, log window, FLOP model
version and samples and probes, and the guarantee they give. Beside them it states what the
claim does not carry, read from every record of the scope as the maker streams them
(`RecordFacts`, the maker's `observe`): the time window, the methods and the workload classes.
A checkpoint of the collector's log at the report's tree size (as `job_statement`), and the
report's SHA-256. Signed with the collector key, as the claim is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, StoreError, VerificationError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.intoto.facts import ScopeFacts
from flopwatch.intoto.predicate import LineageLink
from flopwatch.intoto.sampled_predicate import (
    SCOPE_JOB,
    SCOPE_RUN,
    SampledEvidence,
    SampledUsage,
)
from flopwatch.intoto.statement import DEFAULT_STATEMENT_LIMITS, Subject, sign_statement
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import Checkpoint, sign_checkpoint
from flopwatch.tlog.note import Ed25519NoteSigner
from flopwatch.verify.intoto_sampled import guarantee_of, share_counter
from flopwatch.verify.sampled_format import SampledReport, Scope


class RecordFacts:
    """The window, methods and classes of a scope's records, gathered as the maker streams
    them (pass `observe` to `build_sampled_report` or `build_sampled_run_report`)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.facts = share_counter(scope)

    def observe(self, leaf_index: int, envelope: bytes) -> None:
        try:
            self.facts.add(parse_payload(Envelope.from_bytes(envelope).payload))
        except VerificationError as e:
            raise StoreError(f"log leaf {leaf_index} cannot be read back: {e}") from e


def labels_of_scope(facts: ScopeFacts, scope: Scope) -> tuple[str, str]:
    """The (account, run) whose lineage the statement states: the run's own, or the one run the
    job's records name. ConfigError for a job whose records name several runs or accounts."""
    if scope.is_run:
        return scope.account, scope.run
    runs = sorted({(x.account, x.run) for x in facts.labels})
    if len(runs) != 1:
        names = "; ".join(f"run {shown(r)!r}, account {shown(a)!r}" for a, r in runs[:4])
        raise ConfigError(
            f"the records of job {scope.job_id!r} name {len(runs)} runs or accounts ({names}); "
            "an in-toto statement states one"
        )
    return runs[0]


def build_sampled_statement(
    report: SampledReport,
    data: bytes,
    key: SigningKey,
    facts: RecordFacts,
    *,
    origin: str,
    report_name: str,
    subjects: Sequence[Subject] = (),
    lineage: Sequence[LineageLink] = (),
) -> bytes:
    """The signed statement (a JSON DSSE envelope) about the sampled `report`, serialized as
    `data`, whose records `facts` observed. Its subjects are `subjects`, or the report itself;
    `lineage` the run's ancestors proved at the report's tree size."""
    if (
        problem := identifier_problem(report_name, DEFAULT_STATEMENT_LIMITS.max_string_chars)
    ) is not None:
        raise ConfigError(f"the report's name {shown(report_name)!r} {problem}")
    claim = report.unverified_claim()  # made and signed a moment ago, by this key
    head = report.tree_head.head
    if head.log_id != key.key_id:
        raise ConfigError("the report's tree head is not signed by this collector key")
    if claim.scope != facts.scope:
        raise ConfigError(f"the facts are of {facts.scope}, the report of {claim.scope}")
    f = facts.facts
    if f.first_start_ns is None or f.last_end_ns is None:
        raise StoreError(f"no record of {claim.scope} was observed")
    account, run = labels_of_scope(f, claim.scope)
    note = sign_checkpoint(
        Checkpoint(origin, head.size, head.root), Ed25519NoteSigner(origin, key.private_key)
    )
    digest = hashlib.sha256(data).hexdigest()
    s = claim.sums
    usage = SampledUsage(
        scope=SCOPE_RUN if claim.scope.is_run else SCOPE_JOB,
        job=claim.job_id,
        run=run,
        account=account,
        workload_classes=f.classes,
        lineage=tuple(lineage),
        operations_estimate=s.estimate,
        operations_upper=s.upper,
        methods=tuple(sorted(f.methods)),
        flop_model_version=claim.flop_model_version,
        gpu_intervals=s.intervals,
        gpu_ns=s.gpu_ns,
        window_start_ns=f.first_start_ns,
        window_end_ns=f.last_end_ns,
        first_leaf=claim.root.lowest,
        last_leaf=claim.root.highest,
        reported_ns=claim.created_ns,
        collector_key_id=key.key_id,
        checkpoint=note.to_bytes().decode("utf-8"),
        records=claim.records,
        evidence=SampledEvidence(
            name=report_name,
            sha256=digest,
            samples=claim.samples,
            probes=claim.probes,
            challenge=claim.challenge.hex(),
            guarantee=guarantee_of(claim.samples, claim.probes),
        ),
    )
    return sign_statement(list(subjects) or [Subject(report_name, digest)], usage, key)
