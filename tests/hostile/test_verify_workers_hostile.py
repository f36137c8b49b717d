"""Hostile envelopes through the verify workers: a worker never dies of what it is sent, and
never passes on a record the ingest thread's own verifier would not give."""

from __future__ import annotations

import random

import pytest

from flopwatch.collector.ingest.workers import VerifyWorkers
from flopwatch.errors import VerificationError
from flopwatch.keys import public_raw
from flopwatch.limits import DEFAULT_LIMITS
from tests.hostile.hostile_helpers import NODE_KEY, NOW, STRANGER_KEY, attestation, signed, verifier

VALID_BYTES = signed(attestation()).to_bytes()


def mutants(n: int, seed: int = 7) -> list[bytes]:
    """Deterministic damage: bit flips, truncations, insertions and duplicated spans."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = bytearray(VALID_BYTES)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(4)
            i = rng.randrange(len(data))
            if kind == 0:
                data[i] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[i:]
            elif kind == 2:
                data[i:i] = rng.randbytes(rng.randint(1, 16))
            else:
                data[i:i] = data[i : i + rng.randint(1, 64)]
            if not data:
                data = bytearray(b"\x00")
        out.append(bytes(data))
    return out


@pytest.fixture(scope="module")
def workers():
    w = VerifyWorkers(1, DEFAULT_LIMITS)
    yield w
    w.close()


def test_damaged_envelopes_come_back_none_or_as_the_ingest_thread_would_verify_them(workers):
    sent = [*mutants(600), b"", b"\xff" * 64, VALID_BYTES]
    presented = public_raw(NODE_KEY.public_key)
    got = workers.verify([(data, presented) for data in sent], NOW)
    inline = verifier()
    for data, record in zip(sent, got, strict=True):
        if record is None:
            continue
        assert record == inline.verify_bytes(data)  # raises if the ingest thread would refuse it
    assert got[-1] is not None  # the undamaged envelope verifies ahead
    assert workers.restarts == 0


def test_a_presented_key_that_did_not_sign_verifies_nothing(workers):
    stranger = public_raw(STRANGER_KEY.public_key)
    assert workers.verify([(VALID_BYTES, stranger), (VALID_BYTES, b"\x00" * 32)], NOW) == [
        None,
        None,
    ]
    with pytest.raises(VerificationError):
        verifier(STRANGER_KEY).verify_bytes(VALID_BYTES)
