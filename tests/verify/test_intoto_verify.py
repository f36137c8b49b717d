"""StatementVerifier: an honest statement passes; each way a statement can lie, or fail to be
about the bundle, fails at its step with its reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.dsse import pae
from flopwatch.errors import StatementVerificationError
from flopwatch.intoto.statement import INTOTO_PAYLOAD_TYPE, Subject
from flopwatch.keys import SigningKey, public_raw
from flopwatch.tlog.checkpoint import Checkpoint, sign_checkpoint
from flopwatch.tlog.note import Ed25519NoteSigner
from flopwatch.verify.intoto import INTOTO_STEPS, StatementVerifier
from tests.intoto.statements import (
    COLLECTOR,
    ORIGIN,
    Case,
    envelope_json,
    honest_case,
    resigned,
    sign_payload,
)

HONEST = honest_case()


def verify(case: Case, statement: bytes | None = None, bundle_data: bytes | None = None) -> Any:
    return StatementVerifier().verify(
        case.statement if statement is None else statement,
        bundle_data=case.bundle_data if bundle_data is None else bundle_data,
        report=case.report,
    )


def fails(case: Case, statement: bytes, step: int, reason: str) -> StatementVerificationError:
    with pytest.raises(StatementVerificationError) as e:
        verify(case, statement)
    assert (e.value.step, e.value.reason) == (step, reason), e.value.message
    return e.value


def test_an_honest_statement_passes_every_step():
    seen: list[int] = []
    got = StatementVerifier().verify(
        HONEST.statement,
        bundle_data=HONEST.bundle_data,
        report=HONEST.report,
        progress=lambda n, _: seen.append(n),
    )
    assert seen == list(range(1, len(INTOTO_STEPS) + 1))
    r = HONEST.report
    assert (got.usage.operations_estimate, got.usage.operations_upper) == (
        r.flops_estimate,
        r.flops_upper,
    )
    assert (got.usage.window_start_ns, got.usage.window_end_ns) == (
        r.first_start_ns,
        r.last_end_ns,
    )
    assert got.usage.job == got.usage.run == r.job_id  # no run declared: the job is its run
    assert (got.usage.account, got.usage.workload_class, got.usage.lineage) == ("", "unknown", ())
    assert got.usage.methods == ("gpm",)
    assert (got.usage.gpu_intervals, got.usage.records) == (r.gpu_intervals, r.envelopes)
    assert got.origin == ORIGIN and got.bundle_is_subject


def test_the_signature_verifies_with_the_collectors_public_key_alone():
    # What any in-toto verifier does: PAE over the payload bytes as carried, Ed25519.
    env = envelope_json(HONEST.statement)
    [sig] = env["signatures"]
    assert sig["keyid"] == COLLECTOR.key_id
    public = Ed25519PublicKey.from_public_bytes(public_raw(COLLECTOR.public_key))
    public.verify(
        base64.b64decode(sig["sig"]), pae(env["payloadType"], base64.b64decode(env["payload"]))
    )


def test_a_customer_subject_is_reported_as_not_the_bundle():
    case = honest_case(subjects=[Subject("weights", "ab" * 32)])
    got = verify(case)
    assert [s.name for s in got.subjects] == ["weights"] and not got.bundle_is_subject


def _tampered_payload(statement: bytes) -> bytes:
    env = envelope_json(statement)
    payload = base64.b64decode(env["payload"]).replace(b'"records":3', b'"records":4')
    env["payload"] = base64.b64encode(payload).decode()
    return json.dumps(env).encode()


def test_tampering_fails_the_signature():
    fails(HONEST, _tampered_payload(HONEST.statement), 2, "bad_statement_signature")


def test_another_key_fails_the_signature():
    other = SigningKey.generate()
    fails(HONEST, resigned(HONEST.statement, lambda o: None, other), 2, "bad_statement_signature")


def test_another_payload_type_fails_the_signature():
    payload = base64.b64decode(envelope_json(HONEST.statement)["payload"])
    statement = sign_payload(payload, COLLECTOR, "application/vnd.in-toto.provenance+json")
    fails(HONEST, statement, 2, "bad_statement_signature")
    assert INTOTO_PAYLOAD_TYPE == "application/vnd.in-toto+json"


def test_a_statement_about_another_bundle_is_refused():
    other = honest_case(records=2)  # same collector key, another job bundle
    fails(HONEST, other.statement, 4, "wrong_bundle")
    # and the right statement against a different bundle file
    with pytest.raises(StatementVerificationError) as e:
        verify(HONEST, bundle_data=other.bundle_data)
    assert (e.value.step, e.value.reason) == (4, "wrong_bundle")


def _edit(path: str, value: Any):
    def edit(obj: dict[str, Any]) -> None:
        target = obj
        *parents, last = path.split(".")
        for p in parents:
            target = target[p]
        target[last] = value

    return edit


def _checkpoint(size: int, root: bytes, key: SigningKey = COLLECTOR, origin: str = ORIGIN) -> str:
    note = sign_checkpoint(
        Checkpoint(origin, size, root), Ed25519NoteSigner(origin, key.private_key)
    )
    return note.to_bytes().decode()


HEAD = HONEST.report.tree_head


@pytest.mark.parametrize(
    "path,value,step,reason",
    [
        # a lying collector signs figures other than the ones its bundle proves
        (
            "predicate.operations.estimate",
            str(HONEST.report.flops_estimate - 1),
            6,
            "statement_mismatch",
        ),
        (
            "predicate.operations.upperBound",
            str(HONEST.report.flops_upper // 2),
            6,
            "statement_mismatch",
        ),
        ("predicate.gpuIntervals", 1, 6, "statement_mismatch"),
        ("predicate.records", 1, 6, "statement_mismatch"),
        ("predicate.window.start", "2027-01-15T07:00:00Z", 6, "statement_mismatch"),
        ("predicate.window.end", "2027-01-15T08:00:03.5Z", 6, "statement_mismatch"),
        ("predicate.reportedAt", "2027-02-14T08:00:01Z", 6, "statement_mismatch"),
        ("predicate.job", "slurm:c/2", 6, "statement_mismatch"),
        ("predicate.run", "someone-elses-run", 6, "statement_mismatch"),
        ("predicate.account", "acme", 6, "statement_mismatch"),
        ("predicate.workloadClass", "inference", 6, "statement_mismatch"),
        ("predicate.methods", ["gpm", "unknown-rate"], 6, "statement_mismatch"),
        ("predicate.flopModelVersion", "2", 6, "statement_mismatch"),
        ("predicate.lineage", [{"run": "parent"}], 3, "malformed_predicate"),  # no declaration
        ("predicate.collectorKeyId", "0" * 64, 4, "statement_mismatch"),
        ("predicate.inclusionProofs.digest.sha256", "0" * 64, 4, "wrong_bundle"),
        # checkpoints: another tree, another key, another origin's key name, not a note
        ("predicate.checkpoint", _checkpoint(HEAD.size + 1, HEAD.root), 5, "checkpoint_mismatch"),
        ("predicate.checkpoint", _checkpoint(HEAD.size, b"\x00" * 32), 5, "checkpoint_mismatch"),
        (
            "predicate.checkpoint",
            _checkpoint(HEAD.size, HEAD.root, SigningKey.generate()),
            5,
            "no_trusted_signature",
        ),
        ("predicate.checkpoint", "not a checkpoint\n", 5, "malformed_note"),
        # not the statement or predicate it claims to be
        ("predicateType", "https://slsa.dev/provenance/v1", 3, "malformed_statement"),
        ("_type", "https://in-toto.io/Statement/v0.1", 3, "malformed_statement"),
        ("subject", [], 3, "malformed_statement"),
        ("predicate.operations.estimate", 1e15, 3, "malformed_predicate"),
    ],
)
def test_a_lying_statement_fails_at_its_step(path, value, step, reason):
    fails(HONEST, resigned(HONEST.statement, _edit(path, value), COLLECTOR), step, reason)


def test_the_honest_statement_survives_the_same_resigning():
    # The tampering cases above fail for what they change, not for being re-encoded.
    assert verify(HONEST, resigned(HONEST.statement, lambda o: None, COLLECTOR)).usage


def test_an_oversized_statement_is_refused_before_parsing():
    fails(HONEST, b" " * (300 * 1024), 1, "malformed_envelope")
