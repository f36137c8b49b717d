"""The statement flopwatch writes is an in-toto Statement v1, as in-toto's own library reads
and validates it, and reads back to the same subjects and predicate."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import resource_descriptor_pb2, statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

from flopwatch.errors import ConfigError, VerificationError
from flopwatch.intoto.predicate import (
    BUNDLE_MEDIA_TYPE,
    COMPUTE_USAGE_V1,
    parse_rfc3339,
    rfc3339,
)
from flopwatch.intoto.statement import (
    INTOTO_PAYLOAD_TYPE,
    STATEMENT_V1,
    Subject,
    parse_statement,
    parse_subject,
    statement_bytes,
)
from flopwatch.verify import bundle_format
from tests.intoto.statements import envelope_json, honest_case, payload_of

WEIGHTS = Subject("model.safetensors.index.json", "ab" * 32)


def in_toto_validate(payload: dict) -> Statement:
    """Parse with in-toto's own protobuf bindings (unknown fields refused) and validate."""
    pb = json_format.ParseDict(payload, statement_pb2.Statement())
    statement = Statement.copy_from_pb(pb)
    statement.validate()
    return statement


def test_the_statement_validates_with_in_toto_attestation():
    case = honest_case()
    env = envelope_json(case.statement)
    assert env["payloadType"] == INTOTO_PAYLOAD_TYPE
    payload = payload_of(case.statement)
    statement = in_toto_validate(payload)
    assert statement.pb.type == STATEMENT_V1
    assert statement.pb.predicate_type == COMPUTE_USAGE_V1
    [subject] = statement.pb.subject
    assert subject.name == "a.bundle"
    assert dict(subject.digest) == {
        "sha256": payload["predicate"]["inclusionProofs"]["digest"]["sha256"]
    }
    # The bundle reference is an in-toto ResourceDescriptor too.
    ref = json_format.ParseDict(
        payload["predicate"]["inclusionProofs"], resource_descriptor_pb2.ResourceDescriptor()
    )
    ResourceDescriptor.copy_from_pb(ref).validate()
    assert ref.media_type == BUNDLE_MEDIA_TYPE


def test_customer_subjects_replace_the_bundle_and_validate():
    other = Subject("tokenizer.json", "cd" * 32)
    case = honest_case(subjects=[WEIGHTS, other])
    statement = in_toto_validate(payload_of(case.statement))
    assert [(s.name, s.digest["sha256"]) for s in statement.pb.subject] == [
        (WEIGHTS.name, WEIGHTS.sha256),
        (other.name, other.sha256),
    ]


def test_in_toto_validation_can_fail():
    # The same validation refuses a statement without a subject digest, or of another _type.
    payload = payload_of(honest_case().statement)
    no_digest = json.loads(json.dumps(payload))
    del no_digest["subject"][0]["digest"]
    with pytest.raises(ValueError, match="digest"):
        in_toto_validate(no_digest)
    wrong_type = dict(payload, _type="https://in-toto.io/Statement/v0.1")
    with pytest.raises(ValueError, match="statement type"):
        in_toto_validate(wrong_type)


def test_the_statement_reads_back_to_what_was_written():
    case = honest_case(subjects=[WEIGHTS])
    payload = payload_of(case.statement)
    subjects, usage = parse_statement(json.dumps(payload).encode())
    assert subjects == (WEIGHTS,)
    assert usage.to_json() == payload["predicate"]
    assert (
        statement_bytes(subjects, usage)
        == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    )


def test_operations_past_2_to_the_53_stay_exact():
    payload = payload_of(honest_case().statement)
    big = 10**26 + 1  # a frontier run, not representable as a double
    payload["predicate"]["operations"] = {"estimate": str(big), "upperBound": str(3 * big)}
    _, usage = parse_statement(json.dumps(payload).encode())
    assert (usage.operations_estimate, usage.operations_upper) == (big, 3 * big)
    assert usage.to_json()["operations"]["estimate"] == "100000000000000000000000001"
    # in-toto's Struct holds them as the strings they are
    statement = in_toto_validate(payload)
    assert statement.pb.predicate["operations"]["estimate"] == str(big)


def test_the_media_type_is_the_bundles():
    assert BUNDLE_MEDIA_TYPE == bundle_format.BUNDLE_MEDIA_TYPE


@pytest.mark.parametrize(
    "ns,text",
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_800_000_000_000_000_000, "2027-01-15T08:00:00Z"),
        (1_800_000_000_250_000_000, "2027-01-15T08:00:00.25Z"),
        (1_800_000_000_000_000_001, "2027-01-15T08:00:00.000000001Z"),
    ],
)
def test_times_are_rfc3339_utc_and_read_back_exactly(ns, text):
    assert rfc3339(ns) == text
    assert parse_rfc3339(text, "t") == ns


@pytest.mark.parametrize(
    "text",
    [
        "2027-01-15T08:00:00+00:00",  # UTC only, as "Z"
        "2027-01-15T08:00:00z",
        "2027-01-15 08:00:00Z",
        "2027-02-30T08:00:00Z",  # no such day
        "2027-01-15T24:00:00Z",
        "2027-01-15T08:00:00.1234567891Z",  # past nanoseconds
        "\uff12\uff10\uff12\uff17-01-15T08:00:00Z",  # digits, but not ASCII ones
        "",
    ],
)
def test_other_times_are_refused(text):
    with pytest.raises(VerificationError) as e:
        parse_rfc3339(text, "t")
    assert e.value.reason == "malformed_predicate"


def test_a_subject_is_name_equals_sha256_hex():
    assert parse_subject("weights=sha256:" + "AB" * 32) == Subject("weights", "ab" * 32)
    assert parse_subject("a=b=sha256:" + "0" * 64).name == "a=b"  # the last '=' splits
    for bad in (
        "weights",
        "weights=" + "ab" * 32,
        "weights=sha512:" + "ab" * 64,
        "weights=sha256:" + "ab" * 31,
        "weights=sha256:" + "zz" * 32,
        "=sha256:" + "ab" * 32,
        "bad\x1bname=sha256:" + "ab" * 32,
    ):
        with pytest.raises(ConfigError):
            parse_subject(bad)
