"""The witness: cosigns consistent checkpoints, keeps the size durably, refuses rollbacks (409
with its size), inconsistent checkpoints (422), unknown logs (404), untrusted or bad signatures
(403) and malformed requests (400); over HTTP on loopback too."""

from __future__ import annotations

import hashlib
import http.client
from pathlib import Path

import pytest

from flopwatch import merkle
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import Checkpoint, sign_checkpoint
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Ed25519NoteSigner, Note, open_note, parse_signature_lines
from flopwatch.tlog.witness import MAX_REQUEST_BYTES, encode_request
from flopwatch.witness.service import Witness, witness_handler
from flopwatch.witness.state import WitnessState

ORIGIN = "collector.example/log"
LOG = Ed25519NoteSigner(ORIGIN, SigningKey.generate().private_key)
COSIGNER = Cosigner("witness.example/w1", SigningKey.generate().private_key)
LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(40)]


def signed(size: int, leaves: list[bytes] = LEAVES, signer: Ed25519NoteSigner = LOG) -> bytes:
    checkpoint = Checkpoint(signer.name, size, merkle.root_hash(leaves[:size]))
    return sign_checkpoint(checkpoint, signer).to_bytes()


def request(old: int, new: int, leaves: list[bytes] = LEAVES, **kw) -> bytes:
    proof = merkle.consistency_proof(leaves[:new], old) if old else ()
    return encode_request(old, proof, signed(new, leaves, **kw))


def make_witness(path: Path) -> Witness:
    return Witness(
        cosigner=COSIGNER,
        logs={ORIGIN: [LOG.verifier]},
        state=WitnessState(path),
        now=lambda: 1_700_000_000,
    )


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    return make_witness(tmp_path / "w.db")


def test_a_consistent_checkpoint_is_cosigned_and_the_cosignature_verifies(witness):
    status, _, body = witness.add_checkpoint(request(0, 10))
    assert status == 200
    (sig,) = parse_signature_lines(body.decode())
    note = Note(signed(10).decode().split("\n\n")[0] + "\n", (sig,))
    _, good = open_note(note.to_bytes(), [COSIGNER.verifier])
    assert good == [sig]
    assert COSIGNER.verifier.timestamp(note.text.encode(), sig.sig) == 1_700_000_000
    assert witness.add_checkpoint(request(10, 25))[0] == 200
    assert witness.add_checkpoint(request(25, 25))[0] == 200  # the same tree again


def test_a_rollback_is_refused_with_the_size_held(witness):
    assert witness.add_checkpoint(request(0, 20))[0] == 200
    status, content_type, body = witness.add_checkpoint(request(0, 10))
    assert (status, content_type, body) == (409, "text/x.tlog.size", b"20\n")
    # Even from the right old size, a smaller checkpoint is a malformed request.
    assert witness.add_checkpoint(encode_request(20, (), signed(10)))[0] == 400


def test_an_inconsistent_checkpoint_is_refused(witness):
    assert witness.add_checkpoint(request(0, 10))[0] == 200
    forked = [*LEAVES[:5], merkle.leaf_hash(b"rewritten"), *LEAVES[6:]]
    # Correct-looking proof of the forked tree, from size 10: it cannot match the held root.
    status, _, body = witness.add_checkpoint(request(10, 20, forked))
    assert status == 422 and b"bad_consistency_proof" in body
    # Same size, another root.
    status, _, body = witness.add_checkpoint(encode_request(10, (), signed(10, forked)))
    assert status == 422 and b"root_mismatch" in body
    # Old size 0 while the witness holds 10: a conflict, whatever else the request says.
    assert witness.add_checkpoint(encode_request(0, (LEAVES[0],), signed(10)))[0] == 409
    # The witness still holds size 10 with its root: the honest log goes on.
    assert witness.add_checkpoint(request(10, 30))[0] == 200


def test_unknown_logs_and_untrusted_or_bad_signatures(witness):
    stranger = Ed25519NoteSigner("stranger.example/log", SigningKey.generate().private_key)
    assert witness.add_checkpoint(request(0, 5, signer=stranger))[0] == 404
    impostor = Ed25519NoteSigner(ORIGIN, SigningKey.generate().private_key)
    assert witness.add_checkpoint(request(0, 5, signer=impostor))[0] == 403
    good = signed(5)
    tampered = good.replace(b"\n5\n", b"\n6\n", 1)
    assert witness.add_checkpoint(encode_request(0, (), tampered))[0] == 403


def test_size_zero_must_carry_the_empty_root_and_an_empty_proof(witness):
    assert witness.add_checkpoint(encode_request(0, (LEAVES[0],), signed(10)))[0] == 422
    body = Checkpoint(ORIGIN, 0, hashlib.sha256(b"x").digest()).body()
    data = Note(body, (LOG.sign(body),)).to_bytes()
    assert witness.add_checkpoint(encode_request(0, (), data))[0] == 422
    assert witness.add_checkpoint(request(0, 0))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0\n",
        b"old 00\n\n",
        b"new 0\n\n",
        b"old 0\nnot-base64\n\n",
        b"old 0\n" + b"AAAA\n" + b"\n",
        b"old 0\n" + b"A" * 43 + b"=\n" * 64 + b"\n",
        b"old 0\n\nnot a note",
        b"x" * (MAX_REQUEST_BYTES + 1),
    ],
)
def test_malformed_requests_are_400(witness, body):
    status, _, answer = witness.add_checkpoint(body)
    assert status == 400 and answer


def test_the_state_survives_a_restart(tmp_path):
    first = make_witness(tmp_path / "w.db")
    assert first.add_checkpoint(request(0, 15))[0] == 200
    again = make_witness(tmp_path / "w.db")
    assert again.add_checkpoint(request(0, 20)) == (409, "text/x.tlog.size", b"15\n")
    assert again.add_checkpoint(request(15, 20))[0] == 200


def test_over_http_add_checkpoint_and_the_monitoring_endpoint(witness):
    service = HttpService("127.0.0.1:0", witness_handler(witness))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        conn.request("POST", "/add-checkpoint", body=request(0, 12))
        r = conn.getresponse()
        assert r.status == 200 and r.read().startswith("\u2014 witness.example/w1 ".encode())
        conn.request("POST", "/add-checkpoint", body=request(0, 3))
        r = conn.getresponse()
        assert (r.status, r.getheader("Content-Type"), r.read()) == (
            409,
            "text/x.tlog.size",
            b"12\n",
        )
        conn.request("GET", f"/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint")
        r = conn.getresponse()
        kept = r.read()
        assert r.status == 200
        _, good = open_note(kept, [LOG.verifier, COSIGNER.verifier])
        assert {s.name for s in good} == {ORIGIN, "witness.example/w1"}
        conn.request("GET", f"/{'0' * 64}/checkpoint")
        r = conn.getresponse()
        assert r.status == 404 and r.read()
        conn.request("POST", "/add-checkpoint", body=b"x" * 200_000)
        r = conn.getresponse()
        assert r.status == 413
        conn.close()
    finally:
        service.close()
