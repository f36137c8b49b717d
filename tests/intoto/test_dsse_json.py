"""DSSE envelopes in JSON, and the strict JSON reader under them."""

from __future__ import annotations

import base64
import json

import pytest

from flopwatch.dsse import Envelope, pae
from flopwatch.errors import VerificationError
from flopwatch.intoto.dsse_json import (
    MAX_ENVELOPE_SIGNATURES,
    envelope_from_json,
    envelope_to_json,
    load_json,
)
from flopwatch.keys import SigningKey

KEY = SigningKey.generate()
LIMIT = 1 << 16


def test_an_envelope_round_trips_and_its_signature_is_over_pae():
    env = Envelope.sign(b'{"a":1}', KEY, "application/vnd.in-toto+json")
    data = envelope_to_json(env)
    assert data.endswith(b"\n") and data.count(b"\n") == 1  # one line: also a .jsonl line
    back = envelope_from_json(data, LIMIT)
    assert back == env
    [(keyid, sig)] = back.signatures
    assert keyid == KEY.key_id
    KEY.public_key.verify(sig, pae("application/vnd.in-toto+json", b'{"a":1}'))


def test_url_safe_and_unpadded_base64_are_read():
    payload = b"\xfb\xff\xfe?"  # '+' and '/' in standard base64
    env = Envelope.sign(payload, KEY, "t")
    obj = json.loads(envelope_to_json(env))
    assert "+" in obj["payload"] or "/" in obj["payload"]
    obj["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    obj["signatures"][0]["sig"] = obj["signatures"][0]["sig"].rstrip("=")
    assert envelope_from_json(json.dumps(obj).encode(), LIMIT) == env


def _good() -> dict:
    return json.loads(envelope_to_json(Envelope.sign(b"x", KEY, "t")))


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: o.pop("payload"),
        lambda o: o.update(payload="not base64!"),
        lambda o: o.update(payload="abcde"),  # a length no base64 has
        lambda o: o.update(payloadType=7),
        lambda o: o.update(signatures=[]),
        lambda o: o.update(signatures={"keyid": "k", "sig": ""}),
        lambda o: o.update(signatures=[{"keyid": "k", "sig": ""}] * (MAX_ENVELOPE_SIGNATURES + 1)),
        lambda o: o.update(signatures=["sig"]),
        lambda o: o.update(signatures=[{"keyid": 1, "sig": ""}]),
        lambda o: o.update(signatures=[{"keyid": "k"}]),
    ],
)
def test_a_malformed_envelope_is_refused(edit):
    obj = _good()
    edit(obj)
    with pytest.raises(VerificationError) as e:
        envelope_from_json(json.dumps(obj).encode(), LIMIT)
    assert e.value.reason == "malformed_envelope"


@pytest.mark.parametrize(
    "data,why",
    [
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":-Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting"),
        (b'{"a":' + b"9" * 5000 + b"}", "a number of 5,000 digits"),
        (b'{"a":"\xff"}', "not UTF-8"),
        (b'{"a":1} trailing', "trailing data"),
        (b"", "empty"),
        (b" " * (LIMIT + 1), "oversized"),
    ],
)
def test_json_that_is_not_plain_is_refused(data, why):
    with pytest.raises(VerificationError) as e:
        load_json(data, LIMIT * 4 if why == "nesting" else LIMIT, "bad", "input")
    assert e.value.reason == "bad", why
