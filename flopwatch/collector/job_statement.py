"""The in-toto statement of a job report: what `flopwatch report --format in-toto` writes beside
the bundle (flopwatch.intoto; the predicate in docs/compute-usage-predicate.md).

Made from the bundle just built: the claim's totals and window, the methods and labels its
records carry, a checkpoint of the collector's log at the bundle's tree size (signed with the
collector key as the log's note key, under the log's origin: the same bytes the collector's
tiles serve for that size, since Ed25519 signatures are deterministic), and the bundle's
SHA-256. Signed with the collector key, as the claim is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from flopwatch.attestation import parse_payload
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, StoreError, VerificationError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.intoto.facts import JobFacts, job_facts
from flopwatch.intoto.predicate import BundleRef, ComputeUsage, LineageLink
from flopwatch.intoto.statement import DEFAULT_STATEMENT_LIMITS, Subject, sign_statement
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import Checkpoint, sign_checkpoint
from flopwatch.tlog.note import Ed25519NoteSigner
from flopwatch.verify.bundle_format import Bundle


def statement_facts(bundle: Bundle) -> JobFacts:
    """The methods and the one labelling (run, account, class) of the bundle's job, as its
    statement states them. ConfigError when the job's records name more than one run, account
    or class (the predicate states one)."""
    claim = bundle.unverified_claim()  # made and signed a moment ago, by this key
    try:
        facts = job_facts(
            (parse_payload(Envelope.from_bytes(e.envelope).payload) for e in bundle.entries),
            claim.job_id,
        )
    except VerificationError as e:
        raise StoreError(f"a record of the bundle cannot be read back: {e}") from e
    if len(facts.labels) != 1:
        names = "; ".join(
            f"run {shown(x.run)!r}, account {shown(x.account)!r}, class {x.workload_class}"
            for x in facts.labels[:4]
        )
        raise ConfigError(
            f"the records of job {claim.job_id!r} name {len(facts.labels)} runs, accounts or "
            f"classes ({names}); an in-toto statement states one"
        )
    return facts


def build_statement(
    bundle: Bundle,
    data: bytes,
    key: SigningKey,
    *,
    origin: str,
    bundle_name: str,
    subjects: Sequence[Subject] = (),
    lineage: Sequence[LineageLink] = (),
) -> bytes:
    """The signed statement (a JSON DSSE envelope) about `bundle`, serialized as `data`.

    Its subjects are `subjects`, or the bundle itself when none is given; `lineage` the job's
    run's ancestors (`flopwatch.collector.lineage_evidence`, proved at the bundle's tree size).
    ConfigError as `statement_facts`."""
    if (
        problem := identifier_problem(bundle_name, DEFAULT_STATEMENT_LIMITS.max_string_chars)
    ) is not None:
        raise ConfigError(f"the bundle's name {shown(bundle_name)!r} {problem}")
    claim = bundle.unverified_claim()
    head = bundle.tree_head.head
    if head.log_id != key.key_id:
        raise ConfigError("the bundle's tree head is not signed by this collector key")
    facts = statement_facts(bundle)
    labels = facts.labels[0]
    note = sign_checkpoint(
        Checkpoint(origin, head.size, head.root), Ed25519NoteSigner(origin, key.private_key)
    )
    digest = hashlib.sha256(data).hexdigest()
    usage = ComputeUsage(
        job=claim.job_id,
        run=labels.run,
        account=labels.account,
        workload_class=labels.workload_class,
        lineage=tuple(lineage),
        operations_estimate=claim.flops_estimate,
        operations_upper=claim.flops_upper,
        methods=facts.methods,
        flop_model_version=claim.flop_model_version,
        gpu_intervals=claim.gpu_intervals,
        window_start_ns=claim.first_start_ns,
        window_end_ns=claim.last_end_ns,
        reported_ns=claim.created_ns,
        collector_key_id=key.key_id,
        checkpoint=note.to_bytes().decode("utf-8"),
        records=len(bundle.entries),
        bundle=BundleRef(bundle_name, digest),
    )
    return sign_statement(list(subjects) or [Subject(bundle_name, digest)], usage, key)
