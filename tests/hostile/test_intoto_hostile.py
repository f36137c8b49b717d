"""Hostile in-toto statements against `StatementVerifier` and the statement reader.

Property: whatever bytes arrive as a statement, and whatever JSON a collector signs as one, the
verifier either passes it or refuses it with a StatementVerificationError of a known reason and a
bounded message; it never raises anything else. A mutated statement that passes is the honest
one. Named attacks below carry what a parser differential or a resource attack would use.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.errors import StatementVerificationError, VerificationError
from flopwatch.intoto.statement import parse_statement
from flopwatch.verify.intoto import StatementVerifier
from tests.hostile.hostile_helpers import HOSTILE, MAX_DETAIL_CHARS
from tests.intoto.statements import COLLECTOR, envelope_json, honest_case, payload_of, sign_payload

CASE = honest_case()
PAYLOAD = base64.b64decode(envelope_json(CASE.statement)["payload"])
REASONS = frozenset(
    {
        "malformed_envelope",
        "bad_statement_signature",
        "malformed_statement",
        "malformed_predicate",
        "wrong_bundle",
        "statement_mismatch",
        "checkpoint_mismatch",
        "malformed_note",
        "malformed_checkpoint",
        "no_trusted_signature",
        "bad_note_signature",
        "wrong_checkpoint_origin",
    }
)


def outcome(statement: bytes) -> str:
    try:
        StatementVerifier().verify(statement, bundle_data=CASE.bundle_data, report=CASE.report)
    except StatementVerificationError as e:
        assert e.reason in REASONS, e
        assert len(e.message) <= MAX_DETAIL_CHARS, e.message
        return e.reason
    return "ok"


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from([b'"', b"{", b"[", b",", b"\\u0000", b"-", b"9" * 30])
            )
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 80))]
    return bytes(data)


def test_the_seed_passes():
    assert outcome(CASE.statement) == "ok"


@settings(HOSTILE, max_examples=120)
@given(data=st.data())
def test_a_mutated_envelope_is_refused_with_a_reason_or_is_the_honest_one(data):
    statement = data.draw(mutated(CASE.statement))
    if outcome(statement) == "ok":
        assert base64.b64decode(json.loads(statement)["payload"]) == PAYLOAD


@settings(HOSTILE, max_examples=120)
@given(data=st.data())
def test_a_mutated_payload_signed_by_the_collector_never_crashes_the_verifier(data):
    # A buggy or lying collector signs whatever it likes: only the content can betray it.
    payload = data.draw(mutated(PAYLOAD))
    if outcome(sign_payload(payload, COLLECTOR)) == "ok":
        assert json.loads(payload) == json.loads(PAYLOAD)


# What JSON can hold: no NaN or Infinity (json.dumps would write them; the reader refuses the
# whole statement for them, tests/intoto/test_dsse_json.py).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "job", "run", "account", "workloadClass", "lineage", "operations", "methods",
    "flopModelVersion", "gpuIntervals", "window", "reportedAt", "collectorKeyId", "checkpoint",
    "records", "inclusionProofs",
]  # fmt: skip


@settings(HOSTILE, max_examples=150)
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_json_in_a_predicate_field_is_read_or_refused(field, value):
    payload = payload_of(CASE.statement)
    payload["predicate"][field] = value
    try:
        _, usage = parse_statement(json.dumps(payload).encode())
    except VerificationError as e:
        assert e.reason == "malformed_predicate"
    else:
        assert usage.to_json()[field] == value  # read only as what it is


def _signed(edit: Any) -> bytes:
    payload = payload_of(CASE.statement)
    edit(payload)
    return sign_payload(json.dumps(payload).encode(), COLLECTOR)


def _raw(payload: bytes) -> bytes:
    return sign_payload(payload, COLLECTOR)


def _predicate(**fields: Any) -> bytes:
    return _signed(lambda p: p["predicate"].update(fields))


def _replaced(old: bytes, new: bytes) -> bytes:
    return _raw(PAYLOAD.replace(old, new))


RECORDS = b'"records":3'
ONE = b'"operations":{"estimate":"1","upperBound":"1"},'
UNSIGNED = {**envelope_json(CASE.statement), "signatures": []}
ATTACKS = {
    # Two "operations" keys: a reader keeping the first and one keeping the last disagree.
    "duplicate-key": (_replaced(b'"operations":', ONE + b'"operations":'), "malformed_statement"),
    "nan-count": (_replaced(RECORDS, b'"records":NaN'), "malformed_statement"),
    "huge-number": (_replaced(RECORDS, b'"records":' + b"9" * 10_000), "malformed_statement"),
    "latin1": (_replaced(b'"a.bundle"', b'"\xe9.bundle"'), "malformed_statement"),
    "utf8-bom": (_raw(b"\xef\xbb\xbf" + PAYLOAD), "malformed_statement"),
    "deep-nesting": (_raw(b"[" * 50_000 + b"]" * 50_000), "malformed_statement"),
    "bool-count": (_predicate(records=True), "malformed_predicate"),
    "float-count": (_predicate(records=3.0), "malformed_predicate"),
    "long-lineage": (_predicate(lineage=[{"run": "r"}] * 65), "malformed_predicate"),
    "huge-checkpoint": (_predicate(checkpoint="a" * 70_000), "malformed_predicate"),
    "bidi-job": (_predicate(job="slurm:c/1\u202e"), "malformed_predicate"),
    "many-subjects": (
        _signed(lambda p: p.update(subject=p["subject"] * 65)),
        "malformed_statement",
    ),
    "subject-without-digest": (
        _signed(lambda p: p["subject"][0].pop("digest")),
        "malformed_statement",
    ),
    "subject-escape-name": (
        _signed(lambda p: p["subject"][0].update(name="\x1b[2Jx")),
        "malformed_statement",
    ),
    "oversized": (b"{" + b" " * (257 * 1024) + b"}", "malformed_envelope"),
    "not-json": (b"\x00\x01\x02", "malformed_envelope"),
    "array": (b"[]", "malformed_envelope"),
    "unsigned": (json.dumps(UNSIGNED).encode(), "malformed_envelope"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_named_attacks_are_refused(attack):
    statement, reason = ATTACKS[attack]
    assert outcome(statement) == reason
