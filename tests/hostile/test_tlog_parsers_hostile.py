"""Hostile bytes against the C2SP log parsers: signed notes and checkpoints, cosignatures,
add-checkpoint requests, witness policies, entry bundles and tiles, tile paths, vkeys, 409 bodies.

Property: each parser accepts its honest seed, and on any mutation of it (or any bytes at all)
either accepts or refuses with a VerificationError of a known reason; it never raises anything
else. A mutated checkpoint that still opens under the log key is the very one signed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile.tlog_seeds import SEEDS, exercise

KINDS = sorted(SEEDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_seed_is_accepted(kind):
    assert exercise(kind, SEEDS[kind]) == "ok"


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\n", b"\n\n", b" ", b"+", b"\xe2\x80\x94 ", b"=", b"\x00", b"0"])
            )
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 80))]
    return bytes(data)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutations_are_accepted_or_refused_with_a_reason(kind, data):
    exercise(kind, data.draw(mutated(SEEDS[kind])))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_a_parser(kind, blob):
    exercise(kind, blob)


def test_a_checkpoint_of_many_signatures_or_huge_sizes_is_refused_cheaply():
    many = SEEDS["checkpoint"] + b"\xe2\x80\x94 x AAAAAAA=\n" * 100_000
    assert exercise("checkpoint", many) == "malformed_note"
    huge_proof = b"old 7\n" + b"A" * 43 + b"=\n" * 10_000 + b"\n" + SEEDS["checkpoint"]
    assert exercise("request", huge_proof) == "bad_add_checkpoint"
    assert exercise("bundle", b"\xff\xff" + b"x" * 10) == "malformed_entry_bundle"
    assert exercise("tile_path", b"tile/0/" + b"x000/" * 10_000 + b"000") == "bad_tile_path"
