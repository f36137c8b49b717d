"""Checkpoints and cosignatures: the specs' examples, round trips, sigstore-python's parser as a
second implementation, and malformed inputs refused with a reason."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.merkle import EMPTY_ROOT
from flopwatch.tlog.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from flopwatch.tlog.cosignature import CosignatureVerifier, Cosigner, cosignature_timestamp
from flopwatch.tlog.note import Ed25519NoteSigner, Note, open_note, parse_note, parse_vkey

# c2sp.org/tlog-cosignature: the example checkpoint with its log signature and a cosignature.
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhc"
    "yv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJs"
    "X3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()
# transparency-dev/formats note_cosigv1_test.go: a cosignature and the time it carries.
FORMATS_COSIGNATURE = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJ"
    "XORmnFBOBA=="
)

LOG_KEY = SigningKey.generate()
ORIGIN = "flopwatch.example/log"
LOG = Ed25519NoteSigner(ORIGIN, LOG_KEY.private_key)
ROOT = hashlib.sha256(b"root").digest()


def test_the_spec_example_parses_with_its_cosignature_time():
    checkpoint, note = parse_checkpoint(SPEC_COSIGNED)
    assert checkpoint == Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert note.to_bytes() == SPEC_COSIGNED
    # The tlog-cosignature example signs "time 1679315147".
    assert cosignature_timestamp(note.signatures[1].sig) == 1679315147
    assert cosignature_timestamp(base64.b64decode(FORMATS_COSIGNATURE)[4:]) == 1727964367


def test_a_signed_checkpoint_round_trips_and_names_the_origin():
    checkpoint = Checkpoint(ORIGIN, 42, ROOT)
    data = sign_checkpoint(checkpoint, LOG).to_bytes()
    assert data.decode().startswith(f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n\n\u2014 ")
    opened = open_checkpoint(data, [LOG.verifier], origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    with pytest.raises(VerificationError) as e:
        open_checkpoint(data, [LOG.verifier], origin="elsewhere.example")
    assert e.value.reason == "wrong_checkpoint_origin"


def test_sigstore_python_parses_and_verifies_our_checkpoints():
    """A second, independent implementation: sigstore-python's Rekor v2 checkpoint parser."""
    sigstore_checkpoint = pytest.importorskip("sigstore._internal.rekor.checkpoint")
    trust = pytest.importorskip("sigstore._internal.trust")
    common = pytest.importorskip("sigstore_models.common.v1")
    data = sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), LOG).to_bytes()
    parsed = sigstore_checkpoint.SignedCheckpoint.from_text(data.decode())
    assert parsed.checkpoint.origin == ORIGIN
    assert parsed.checkpoint.log_size == 7
    assert parsed.checkpoint.log_hash == ROOT.hex()
    assert parsed.checkpoint.other_content == []
    sig = parsed.signed_note.signatures[0]
    assert (sig.name, sig.sig_hash) == (ORIGIN, LOG.verifier.key_id)
    der = LOG_KEY.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = common.PublicKey(
        raw_bytes=base64.b64encode(der), key_details=common.PublicKeyDetails.PKIX_ED25519
    )
    keyring = trust.Keyring([public])
    # sigstore selects the signature line by the first four bytes of the key id it is given.
    parsed.signed_note.verify(keyring, LOG.verifier.key_id + b"\x00" * 28)
    tampered = data.replace(b"\n7\n", b"\n8\n")
    bad = sigstore_checkpoint.SignedCheckpoint.from_text(tampered.decode())
    with pytest.raises(Exception, match="invalid signature"):
        bad.signed_note.verify(keyring, LOG.verifier.key_id + b"\x00" * 28)


def test_cosignatures_verify_and_bind_the_time_and_the_checkpoint():
    witness = Cosigner("witness.example/w1", SigningKey.generate().private_key)
    body = Checkpoint(ORIGIN, 9, ROOT).body()
    sig = witness.cosign(body, 1_700_000_000)
    assert (
        sig.key_id
        == hashlib.sha256(
            b"witness.example/w1\n\x04" + witness.private_key.public_key().public_bytes_raw()
        ).digest()[:4]
    )
    assert witness.verifier.timestamp(body.encode(), sig.sig) == 1_700_000_000
    note_bytes = Note(body, (LOG.sign(body), sig)).to_bytes()
    _, good = open_note(note_bytes, [witness.verifier])
    assert good == [sig]
    # The time is signed: change it and the cosignature fails.
    moved = (1_700_000_001).to_bytes(8, "big") + sig.sig[8:]
    assert not witness.verifier.verify(body.encode(), moved)
    other = Checkpoint(ORIGIN, 10, ROOT).body().encode()
    assert not witness.verifier.verify(other, sig.sig)
    # A cosignature key is not a note key: the log's verifier ignores the line.
    assert parse_vkey(witness.verifier.vkey(), sig_types=(4,)).key_id == sig.key_id
    with pytest.raises(VerificationError):
        open_note(note_bytes, [CosignatureVerifier("witness.example/w1", LOG_KEY.public_key)])


def test_time_zero_and_wrong_sizes_are_refused():
    witness = Cosigner("w", SigningKey.generate().private_key)
    body = Checkpoint(ORIGIN, 1, ROOT).body()
    zero = witness.cosign(body, 0)
    with pytest.raises(VerificationError, match="time 0"):
        witness.verifier.timestamp(body.encode(), zero.sig)
    with pytest.raises(VerificationError, match="72 bytes"):
        cosignature_timestamp(b"x" * 64)


BAD_BODIES = {
    "two lines": "origin\n5\n",
    "leading zero": "origin\n05\n" + base64.b64encode(ROOT).decode() + "\n",
    "negative": "origin\n-5\n" + base64.b64encode(ROOT).decode() + "\n",
    "plus sign": "origin\n+5\n" + base64.b64encode(ROOT).decode() + "\n",
    "too large": "origin\n18446744073709551616\n" + base64.b64encode(ROOT).decode() + "\n",
    "short root": "origin\n5\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
    "root not base64": "origin\n5\nnot-base64!\n",
    "space in origin": "my log\n5\n" + base64.b64encode(ROOT).decode() + "\n",
    "empty origin": "\n5\n" + base64.b64encode(ROOT).decode() + "\n",
    "empty extension": "origin\n5\n" + base64.b64encode(ROOT).decode() + "\n\n",
    "no final newline": "origin\n5\n" + base64.b64encode(ROOT).decode(),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_malformed_checkpoints_are_refused_with_a_reason(name):
    with pytest.raises(VerificationError) as e:
        Checkpoint.from_body(BAD_BODIES[name])
    assert e.value.reason == "malformed_checkpoint"


def test_extension_lines_are_kept_opaque_and_signed():
    body = f"{ORIGIN}\n0\n{base64.b64encode(EMPTY_ROOT).decode()}\nTimestamp: 1\n"
    checkpoint = Checkpoint.from_body(body)
    assert checkpoint.extensions == ("Timestamp: 1",)
    assert checkpoint.body() == body


def test_the_log_key_must_be_named_after_the_origin():
    with pytest.raises(ValueError, match="origin"):
        sign_checkpoint(Checkpoint("other.example", 1, ROOT), LOG)
    # A checkpoint signed by a known key under another name than its origin is refused.
    liar = Ed25519NoteSigner("liar.example", LOG_KEY.private_key)
    body = Checkpoint(ORIGIN, 1, ROOT).body()
    data = Note(body, (liar.sign(body),)).to_bytes()
    with pytest.raises(VerificationError) as e:
        open_checkpoint(data, [liar.verifier])
    assert e.value.reason == "wrong_checkpoint_origin"
    assert parse_note(data).text == body
