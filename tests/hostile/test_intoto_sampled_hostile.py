"""Hostile in-toto statements about sampled reports, against `SampledStatementVerifier` and the
compute-usage-sampled reader.

Property: whatever bytes arrive as the statement, and whatever JSON the collector signs as one,
the verifier passes it or refuses it with a StatementVerificationError of a known reason and a
bounded message; it never raises anything else. A mutated statement that passes is the honest
one (or, signed by the collector, reads as the same JSON)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.collector.sampled_statement import RecordFacts, build_sampled_statement
from flopwatch.errors import StatementVerificationError, VerificationError
from flopwatch.intoto.statement import parse_sampled_statement
from flopwatch.verify.intoto_sampled import SampledStatementVerifier
from flopwatch.verify.sampled import SampledVerifier
from flopwatch.verify.sampled_format import Scope
from tests.hostile.hostile_helpers import HOSTILE, MAX_DETAIL_CHARS
from tests.hostile.test_intoto_hostile import JSON, REASONS, mutated
from tests.intoto.statements import COLLECTOR, ORIGIN, envelope_json, payload_of, sign_payload
from tests.nodes import NOW, Node
from tests.verify.bundle_builder import BundleBuilder


def _case() -> tuple[bytes, bytes]:
    a, b = Node("a", run="llama", account="acme"), Node("b", job="other")
    site = BundleBuilder(COLLECTOR, now_ns=NOW)
    for n in (a, b):
        site.enroll(n.node_id, n.public_raw)
    mine = []
    for _ in range(6):
        mine.append(a.envelope())
        site.append([mine[-1], b.envelope()])
    report = site.sampled(a.job, samples=8, probes=8)
    facts = RecordFacts(Scope(job_id=a.job))
    for i, envelope in enumerate(mine):
        facts.observe(i, envelope)
    data = report.to_bytes()
    statement = build_sampled_statement(
        report, data, COLLECTOR, facts, origin=ORIGIN, report_name="a.sampled"
    )
    return data, statement


REPORT, STATEMENT = _case()
RESULT = SampledVerifier(collector_key_id=COLLECTOR.key_id, min_samples=1, min_probes=0).verify(
    REPORT
)
PAYLOAD = base64.b64decode(envelope_json(STATEMENT)["payload"])
SAMPLED_REASONS = REASONS | {"wrong_report", "unrelated_envelope", "bad_lineage"}


def outcome(statement: bytes) -> str:
    try:
        SampledStatementVerifier().verify(statement, report_data=REPORT, result=RESULT)
    except StatementVerificationError as e:
        assert e.reason in SAMPLED_REASONS, e
        assert len(e.message) <= MAX_DETAIL_CHARS, e.message
        return e.reason
    return "ok"


def test_the_seed_passes():
    assert outcome(STATEMENT) == "ok"
    assert payload_of(STATEMENT)["predicate"]["scope"] == "job"


@settings(HOSTILE, max_examples=120)
@given(data=st.data())
def test_a_mutated_envelope_is_refused_with_a_reason_or_is_the_honest_one(data):
    statement = data.draw(mutated(STATEMENT))
    if outcome(statement) == "ok":
        assert base64.b64decode(json.loads(statement)["payload"]) == PAYLOAD


@settings(HOSTILE, max_examples=120)
@given(data=st.data())
def test_a_mutated_payload_signed_by_the_collector_never_crashes_the_verifier(data):
    payload = data.draw(mutated(PAYLOAD))
    if outcome(sign_payload(payload, COLLECTOR)) == "ok":
        assert _checked(payload) == _checked(PAYLOAD)


def _checked(payload: bytes) -> dict[str, Any]:
    """What the verifier holds to the report exactly: the predicate as read (unknown fields are
    ignored), but not the report's file name (a label), what is checked on the opened records
    only, nor the guarantee's last bits (held to within a relative 1e-12, as another JSON
    writer may round). (The subjects are the operator's word.)"""
    _, usage = parse_sampled_statement(payload)
    out = {k: v for k, v in usage.to_json().items() if k not in SAMPLED_ONLY}
    out["evidence"]["report"].pop("name")
    guarantee = usage.evidence.guarantee
    assert guarantee.close_to(parse_sampled_statement(PAYLOAD)[1].evidence.guarantee)
    out["evidence"].pop("guarantee")
    return out


FIELDS = [
    "scope", "job", "run", "account", "workloadClasses", "lineage", "operations", "methods",
    "flopModelVersion", "gpuIntervals", "gpuNanoseconds", "window", "logWindow", "reportedAt",
    "collectorKeyId", "checkpoint", "records", "evidence",
]  # fmt: skip


@settings(HOSTILE, max_examples=150)
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_json_in_a_predicate_field_is_read_or_refused(field, value):
    payload = payload_of(STATEMENT)
    payload["predicate"][field] = value
    try:
        _, usage = parse_sampled_statement(json.dumps(payload).encode())
    except VerificationError as e:
        assert e.reason == "malformed_predicate"
    else:
        assert usage.to_json()[field] == value  # read only as what it is
    # and signed by the collector, the verifier refuses it or it is the honest value (but for
    # what is checked on the opened records only: a wider window, an extra method or class)
    signed = sign_payload(json.dumps(payload).encode(), COLLECTOR)
    if outcome(signed) == "ok" and field not in SAMPLED_ONLY:
        assert payload["predicate"][field] == payload_of(STATEMENT)["predicate"][field]


SAMPLED_ONLY = frozenset({"window", "methods", "workloadClasses"})
