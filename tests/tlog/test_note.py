"""Signed notes against the spec's own example, the Go reference's, and malformed inputs."""

from __future__ import annotations

import base64

import pytest

from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.tlog import note
from flopwatch.tlog.note import (
    TYPE_COSIGNATURE_V1,
    TYPE_ED25519,
    Ed25519NoteSigner,
    Ed25519Verifier,
    Note,
    Signature,
    open_note,
    parse_note,
    parse_vkey,
)

# c2sp.org/signed-note, "Verifier keys" example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3m"
    "FXmRKuwHjG1Yu72IneyaQM=\n"
).encode()
# golang.org/x/mod/sumdb/note's documented example (note.go, note_test.go).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
# c2sp.org/signed-note's first example: the text holds a blank line of its own.
QUASIMODO = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "\u2014 quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMou"
    "FSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()


def verifier_of(vkey: str) -> Ed25519Verifier:
    key = parse_vkey(vkey)
    return Ed25519Verifier(key.name, key.public_key)


@pytest.mark.parametrize(("vkey", "data"), [(SPEC_VKEY, SPEC_NOTE), (GO_VKEY, GO_NOTE)])
def test_reference_notes_verify_with_their_vkeys(vkey, data):
    verifier = verifier_of(vkey)
    parsed, good = open_note(data, [verifier])
    assert good == [parsed.signatures[0]]
    assert parsed.to_bytes() == data  # serializes back byte for byte
    assert str(parse_vkey(vkey)) == vkey
    assert verifier.vkey() == vkey


def test_the_text_ends_at_the_last_blank_line():
    parsed = parse_note(QUASIMODO)
    assert parsed.text.count("\n") == 4
    assert parsed.text.endswith("ed è subito sera.\n")
    assert [s.name for s in parsed.signatures] == ["quasimodo.example/salvatore"]


def test_signing_gives_the_key_id_the_spec_defines_and_round_trips():
    key = SigningKey.generate()
    signer = Ed25519NoteSigner("flopwatch.example/log", key.private_key)
    signed = note.sign_note("hello\n", [signer])
    raw = key.public_key.public_bytes_raw()
    want_id = note.hashlib.sha256(b"flopwatch.example/log\n\x01" + raw).digest()[:4]
    assert signed.signatures[0].key_id == want_id
    parsed, good = open_note(signed.to_bytes(), [signer.verifier])
    assert parsed == signed and good == list(signed.signatures)
    assert parse_vkey(signer.verifier.vkey()).public == raw


def test_unknown_keys_are_ignored_and_a_note_without_a_known_one_refused():
    other = Ed25519NoteSigner("other.example", SigningKey.generate().private_key)
    with pytest.raises(VerificationError) as e:
        open_note(SPEC_NOTE, [other.verifier])
    assert e.value.reason == "no_trusted_signature"
    # Same name, another key: ignored too (the key id differs).
    same_name = Ed25519NoteSigner("example.com/foo", SigningKey.generate().private_key)
    with pytest.raises(VerificationError):
        open_note(SPEC_NOTE, [same_name.verifier])
    # An unknown signature beside a known one does not matter.
    extra = Signature("zz.example", b"\x00\x01\x02\x03", b"x" * 64).line()
    parsed, good = open_note(SPEC_NOTE + extra.encode(), [verifier_of(SPEC_VKEY)])
    assert len(parsed.signatures) == 2 and len(good) == 1


def test_a_known_key_whose_signature_fails_refuses_the_note():
    parsed = parse_note(SPEC_NOTE)
    sig = parsed.signatures[0]
    forged = Note("This is another message.\n", (sig,))
    with pytest.raises(VerificationError) as e:
        open_note(forged.to_bytes(), [verifier_of(SPEC_VKEY)])
    assert e.value.reason == "bad_note_signature"


MALFORMED = {
    "no blank line": b"text\n\xe2\x80\x94 a AAAAAAA=\n",
    "no signature": b"text\n\n",
    "no final newline": SPEC_NOTE[:-1],
    "text without newline": b"\n\n\xe2\x80\x94 a AAAAAAA=\n"[1:],
    "not utf-8": b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n",
    "control character": b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n",
    "carriage return": b"text\r\n\n\xe2\x80\x94 a AAAAAAA=\n",
    "hyphen not em dash": b"text\n\n- a AAAAAAA=\n",
    "short signature": b"text\n\n\xe2\x80\x94 a AAAA\n",
    "bad base64": b"text\n\n\xe2\x80\x94 a AA*AAAA=\n",
    "unpadded base64": b"text\n\n\xe2\x80\x94 a AAAAAAA\n",
    "plus in name": b"text\n\n\xe2\x80\x94 a+b AAAAAAA=\n",
    "empty name": b"text\n\n\xe2\x80\x94  AAAAAAA=\n",
    "no space": b"text\n\n\xe2\x80\x94 AAAAAAA=\n",
    "blank signature line": b"text\n\n\xe2\x80\x94 a AAAAAAA=\n\n",
    "too large": b"x" * (note.MAX_NOTE_BYTES + 1),
    "too many signatures": b"text\n\n"
    + b"\xe2\x80\x94 a AAAAAAA=\n" * (note.MAX_NOTE_SIGNATURES + 1),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_notes_are_refused_with_a_reason(name):
    with pytest.raises(VerificationError) as e:
        parse_note(MALFORMED[name])
    assert e.value.reason == "malformed_note"
    assert e.value.message


# transparency-dev/formats note_cosigv1_test.go: a witness vkey of type 0x04, and one of type
# 0x01 whose base64 holds a '+'.
WITNESS_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"


def test_vkeys_of_both_types_parse_and_check_their_key_id():
    w = parse_vkey(WITNESS_VKEY, sig_types=(TYPE_COSIGNATURE_V1,))
    assert (w.name, w.sig_type, w.key_id.hex()) == ("remora.n621.de", 4, "da77ade7")
    p = parse_vkey(PLUS_VKEY)
    assert (p.name, p.sig_type, p.key_id.hex()) == ("TEST", TYPE_ED25519, "7997405c")


BAD_VKEYS = {
    "two parts": "bananas.sigstore.dev+12344556",
    "bad base64": "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
    "unknown type": "rekor.sigstore.dev+12345678+AwEB",
    "id not hex": "example.com/foo+NOTAHASH+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    "wrong id": "example.com/foo+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    "wrong type for use": WITNESS_VKEY,
    "short key": "a+00000000+" + base64.b64encode(b"\x01" + b"k" * 31).decode(),
    "empty name": "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
}


@pytest.mark.parametrize("name", sorted(BAD_VKEYS))
def test_bad_vkeys_are_refused(name):
    with pytest.raises(VerificationError) as e:
        parse_vkey(BAD_VKEYS[name])
    assert e.value.reason == "malformed_vkey"
