"""Hostile bytes against the DSSE envelope parser and signature check.

Property: `Envelope.from_bytes` returns an envelope or raises VerificationError with a parse
reason, never anything else; and no change to a signed envelope's bytes yields a *different*
record that verifies. DSSE signs PAE(payload_type, payload), not the envelope's bytes, so some
changes (an unknown field added, a field sent twice with the kept copy intact) decode to the very
record that was signed: those verify to the same digest, which the collector acks as a duplicate.
Everything else is rejected with a specific reason.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flopwatch.dsse import PAYLOAD_TYPE, Envelope
from flopwatch.errors import VerificationError
from flopwatch.limits import Limits
from flopwatch.v1 import envelope_pb2
from tests.hostile.hostile_helpers import (
    HOSTILE,
    NODE_KEY,
    PARSE_REASONS,
    SIGNATURE_REASONS,
    any_field,
    attestation,
    field_bytes,
    mutated,
    signed,
    tag,
    top_level_fields,
    verifier,
)

VALID = signed(attestation())
VALID_BYTES = VALID.to_bytes()
VERIFIER = verifier()


def outcome(data: bytes) -> str:
    """ "same" when `data` verifies as the very record that was signed, else the reason code.

    Fails the test on any exception other than VerificationError, and on a verified record that
    is not the signed one.
    """
    try:
        env = Envelope.from_bytes(data)
    except VerificationError as e:
        assert e.reason in PARSE_REASONS, e
        return e.reason
    try:
        record = VERIFIER.verify(env)
    except VerificationError as e:
        assert e.reason in SIGNATURE_REASONS | PARSE_REASONS, e
        return e.reason
    assert (env.payload_type, env.payload) == (VALID.payload_type, VALID.payload)
    assert record.digest == VALID.digest
    return "same"


# -- arbitrary bytes ---------------------------------------------------------------------------
@settings(HOSTILE, max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_verification_error(data: bytes) -> None:
    result = outcome(data)
    event(result)
    assert result != "same"


@settings(HOSTILE, max_examples=100)
@given(st.binary(min_size=65, max_size=512))
def test_bytes_above_the_size_limit_are_refused_before_parsing(data: bytes) -> None:
    with pytest.raises(VerificationError) as e:
        Envelope.from_bytes(data, Limits(max_envelope_bytes=64))
    assert e.value.reason == "oversized"


def test_deeply_nested_groups_are_malformed_not_a_recursion_error() -> None:
    start_group = tag(7, 3)
    for depth in (10, 100, 10_000, 100_000):
        assert outcome(start_group * depth) == "malformed"


# -- protobuf-shaped garbage: right framing, wrong types and values -----------------------------
KEYIDS = st.sampled_from([NODE_KEY.key_id, NODE_KEY.key_id[:63], "", "x" * 300])
TYPES = st.sampled_from([PAYLOAD_TYPE, PAYLOAD_TYPE.upper(), "application/json", ""])


@st.composite
def signature_message(draw: st.DrawFn) -> bytes:
    parts = [
        field_bytes(1, draw(st.binary(max_size=80))),
        field_bytes(2, draw(KEYIDS).encode()),
    ]
    return b"".join(draw(st.permutations(parts)))


ENVELOPE_FIELD = st.one_of(
    st.builds(field_bytes, st.just(1), st.binary(max_size=256)),  # payload
    st.builds(field_bytes, st.just(2), TYPES.map(str.encode)),  # payload_type
    st.builds(field_bytes, st.just(3), signature_message()),  # signatures
    any_field(st.integers(1, 5) | st.integers(6, 2**29 - 1)),
)


@settings(HOSTILE, max_examples=300)
@given(st.lists(ENVELOPE_FIELD, max_size=12).map(b"".join))
def test_protobuf_shaped_garbage_is_rejected_with_a_reason(data: bytes) -> None:
    result = outcome(data)
    event(result)
    assert result != "same"


@settings(HOSTILE, max_examples=50)
@given(st.integers(5, 40))
def test_more_signatures_than_the_limit_are_malformed(n: int) -> None:
    sig = envelope_pb2.Signature(keyid=NODE_KEY.key_id, sig=VALID.signatures[0][1])
    msg = VALID.to_message()
    del msg.signatures[:]
    msg.signatures.extend([sig] * n)
    assert outcome(msg.SerializeToString()) == "malformed"


# -- mutations of a valid signed envelope ------------------------------------------------------
@settings(HOSTILE, max_examples=400)
@given(mutated(VALID_BYTES, extra=ENVELOPE_FIELD))
def test_mutated_envelope_is_rejected_or_is_the_signed_record(data: bytes) -> None:
    event(outcome(data))


def test_every_single_bit_flip_is_rejected_or_is_the_signed_record() -> None:
    reasons: Counter[str] = Counter()
    for i in range(len(VALID_BYTES)):
        for bit in range(8):
            data = bytearray(VALID_BYTES)
            data[i] ^= 1 << bit
            reasons[outcome(bytes(data))] += 1
    # Each layer was reached: framing, payload type, key id and signature over the payload.
    assert {"malformed", "wrong_payload_type", "unknown_key", "bad_signature"} <= set(reasons)
    # A flip that leaves the signed content alone can only hit bytes outside it (for example a
    # field number turned into an unknown one next to an intact copy); they are few.
    assert reasons["same"] <= len(VALID_BYTES) // 10, reasons


# -- duplicated fields: the parser keeps the last copy, and the signature covers that one --------
def _fields() -> dict[int, bytes]:
    return {number: raw for number, _, raw in top_level_fields(VALID_BYTES)}


def test_duplicated_payload_keeps_the_last_copy() -> None:
    f = _fields()
    forged = field_bytes(1, b"\x00" * 40)
    # The signed payload last: the parser keeps it, so this is the signed record again.
    assert outcome(forged + VALID_BYTES) == "same"
    # The forged payload last: the parser keeps that, and no trusted key signed it.
    assert outcome(VALID_BYTES + forged) == "bad_signature"
    assert outcome(f[1] + f[2] + f[3] + forged) == "bad_signature"


def test_duplicated_payload_type_keeps_the_last_copy() -> None:
    other = field_bytes(2, b"application/vnd.flopwatch.attestation.v2+protobuf")
    assert outcome(VALID_BYTES + other) == "wrong_payload_type"
    assert outcome(other + VALID_BYTES) == "same"


def test_extra_signatures_cannot_hide_a_bad_one_by_a_trusted_key() -> None:
    f = _fields()
    bad = field_bytes(3, field_bytes(1, b"\x01" * 64) + field_bytes(2, NODE_KEY.key_id.encode()))
    stranger = field_bytes(3, field_bytes(1, b"\x01" * 64) + field_bytes(2, b"f" * 64))
    assert outcome(VALID_BYTES + f[3]) == "same"  # the same good signature twice
    assert outcome(VALID_BYTES + stranger) == "same"  # an untrusted key's signature is ignored
    assert outcome(VALID_BYTES + bad) == "bad_signature"
    assert outcome(bad + VALID_BYTES) == "bad_signature"
