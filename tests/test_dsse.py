import pytest

from flopwatch.dsse import PAYLOAD_TYPE, Envelope, envelope_digest, pae
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.limits import Limits


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_pae_matches_dsse_spec_vector() -> None:
    # Test vector from the DSSE protocol specification.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_verify_round_trip(key: SigningKey) -> None:
    env = Envelope.sign(b"payload bytes", key)
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env
    assert again.verify({key.key_id: key.public_key}) == key.key_id
    assert again.digest == envelope_digest(PAYLOAD_TYPE, b"payload bytes")


@pytest.mark.parametrize("position", [0, 5, -1])
def test_flipped_payload_byte_is_detected(key: SigningKey, position: int) -> None:
    env = Envelope.sign(b"some attestation payload", key)
    payload = bytearray(env.payload)
    payload[position] ^= 0x01
    forged = Envelope(bytes(payload), env.payload_type, env.signatures)
    with pytest.raises(VerificationError) as e:
        forged.verify({key.key_id: key.public_key})
    assert e.value.reason == "bad_signature"


def test_signature_by_unknown_key_is_refused(key: SigningKey) -> None:
    other = SigningKey.generate()
    env = Envelope.sign(b"x", other)
    with pytest.raises(VerificationError) as e:
        env.verify({key.key_id: key.public_key})
    assert e.value.reason == "unknown_key"


def test_signature_relabelled_with_trusted_keyid_fails(key: SigningKey) -> None:
    attacker = SigningKey.generate()
    env = Envelope.sign(b"x", attacker)
    relabelled = Envelope(env.payload, env.payload_type, ((key.key_id, env.signatures[0][1]),))
    with pytest.raises(VerificationError) as e:
        relabelled.verify({key.key_id: key.public_key})
    assert e.value.reason == "bad_signature"


def test_changed_payload_type_is_refused(key: SigningKey) -> None:
    env = Envelope.sign(b"x", key, payload_type="application/json")
    with pytest.raises(VerificationError) as e:
        env.verify({key.key_id: key.public_key})
    assert e.value.reason == "wrong_payload_type"


def test_oversized_envelope_is_refused_before_parsing() -> None:
    with pytest.raises(VerificationError) as e:
        Envelope.from_bytes(b"\x00" * 2048, Limits(max_envelope_bytes=1024))
    assert e.value.reason == "oversized"


def test_garbage_bytes_are_malformed() -> None:
    with pytest.raises(VerificationError) as e:
        Envelope.from_bytes(b"\xff\xff\xff\xff")
    assert e.value.reason == "malformed"


def test_unsigned_envelope_is_refused(key: SigningKey) -> None:
    env = Envelope(b"x", PAYLOAD_TYPE, ())
    with pytest.raises(VerificationError) as e:
        Envelope.from_bytes(env.to_bytes())
    assert e.value.reason == "unsigned"
