"""The pure lineage arithmetic and its signed statements: cumulative sums through local and
foreign ancestors, the refusals (self, cycle, unknown, redeclared, too deep), the third-of-the-
parent fact at its boundary, and run claims / declarations that are tampered, mis-typed or
malformed."""

from __future__ import annotations

import pytest

from flopwatch.dsse import Envelope
from flopwatch.errors import LineageError, VerificationError
from flopwatch.keys import SigningKey
from flopwatch.lineage import (
    MAX_LINEAGE_DEPTH,
    Compute,
    ForeignParent,
    LocalParent,
    check_declaration,
    derived_over_third,
    lineage_of,
)
from flopwatch.statements import (
    RUN_CLAIM_TYPE,
    RUN_DECLARATION_TYPE,
    RunClaim,
    RunDeclaration,
    canonical_json,
)

OWN = {("a", "base"): Compute(900, 1000, 5, 7), ("a", "ft"): Compute(300, 400, 1, 1)}


def own(key):
    return OWN.get(key, Compute())


def test_cumulative_sums_local_then_foreign_ancestors():
    foreign = ForeignParent("k" * 64, ("x", "root"), Compute(10_000, 20_000, 3, 3))
    parents = {
        ("a", "ft"): LocalParent(("a", "base")),
        ("a", "base"): foreign,
        ("a", "rl"): LocalParent(("a", "ft")),
    }
    view = lineage_of(("a", "rl"), parents, own)
    assert view.ancestors == (("a", "ft"), ("a", "base"), ("x", "root"))
    assert view.inherited == Compute(300 + 900 + 10_000, 400 + 1000 + 20_000, 1 + 5 + 3, 1 + 7 + 3)
    assert view.cumulative == view.inherited  # no compute of its own
    root = lineage_of(("a", "base"), {}, own)
    assert (root.parent, root.inherited, root.cumulative) == (None, Compute(), OWN[("a", "base")])
    assert not root.derived_over_third


def test_derived_over_third_at_its_boundary():
    assert not derived_over_third(300, 900)  # exactly a third: not above
    assert derived_over_third(301, 900)
    assert derived_over_third(1, 0)
    view = lineage_of(("a", "ft"), {("a", "ft"): LocalParent(("a", "base"))}, own)
    assert not view.derived_over_third  # 300 of 900


def test_refusals_say_why():
    def known(key):
        return key in OWN

    parents = {("a", "ft"): LocalParent(("a", "base"))}
    with pytest.raises(LineageError, match="itself"):
        check_declaration(("a", "base"), LocalParent(("a", "base")), parents, known)
    with pytest.raises(LineageError, match="cycle"):
        check_declaration(("a", "base"), LocalParent(("a", "ft")), parents, known)
    with pytest.raises(LineageError, match="unknown parent"):
        check_declaration(("a", "new"), LocalParent(("b", "base")), parents, known)
    with pytest.raises(LineageError, match="never changed"):
        check_declaration(("a", "ft"), LocalParent(("a", "new")), parents, known)
    # A declared run with no records yet is a known parent.
    check_declaration(("a", "next"), LocalParent(("a", "ft")), parents, lambda k: False)
    # A chain as deep as the bound takes no more.
    chain = {("a", str(i + 1)): LocalParent(("a", str(i))) for i in range(MAX_LINEAGE_DEPTH)}
    check_declaration(("a", "x"), LocalParent(("a", str(MAX_LINEAGE_DEPTH - 1))), chain, known)
    with pytest.raises(LineageError, match="deep"):
        check_declaration(("a", "x"), LocalParent(("a", str(MAX_LINEAGE_DEPTH))), chain, known)


def claim(key: SigningKey, **changes) -> bytes:
    c = RunClaim("acme", "llama", 10**25, 2 * 10**25, 5, 6, 42, "ab" * 32, 7)
    if not changes:
        return c.sign(key).to_bytes()
    fields = {
        "account": "acme",
        "run": "llama",
        "flops_estimate": "1",
        "flops_upper": "2",
        "gpu_time_fs": "3",
        "energy_nj": "4",
        "tree_size": 1,
        "root": "ab" * 32,
        "claimed_at_ns": 1,
    }
    fields.update(changes)
    return Envelope.sign(canonical_json(fields), key, RUN_CLAIM_TYPE).to_bytes()


def test_a_run_claim_round_trips_and_refuses_what_is_wrong():
    key = SigningKey.generate()
    c = RunClaim.verified(claim(key), key.public_key)
    assert (c.flops_estimate, c.flops_upper, c.tree_size, c.collector_key_id) == (
        10**25,
        2 * 10**25,
        42,
        key.key_id,
    )
    with pytest.raises(VerificationError, match="no signature by collector key"):
        RunClaim.verified(claim(key), SigningKey.generate().public_key)
    for bad, why in [
        ({"flops_estimate": "-1"}, "decimal"),
        ({"flops_estimate": 5}, "not a str"),
        ({"tree_size": True}, "not a int"),
        ({"tree_size": -1}, "negative"),
        ({"root": "zz" * 32}, "hex"),
        ({"flops_upper": "9" * 41}, "decimal"),
    ]:
        with pytest.raises(VerificationError, match=why):
            RunClaim.verified(claim(key, **bad), key.public_key)
    other_type = Envelope.sign(b"{}", key, RUN_DECLARATION_TYPE).to_bytes()
    with pytest.raises(VerificationError, match="payload type"):
        RunClaim.verified(other_type, key.public_key)
    with pytest.raises(VerificationError, match="too large"):
        RunClaim.verified(b"x" * 10_000, key.public_key)
    with pytest.raises(VerificationError, match="not JSON"):
        RunClaim.verified(Envelope.sign(b"\xff", key, RUN_CLAIM_TYPE).to_bytes(), key.public_key)


def test_a_declaration_round_trips_with_its_claim():
    key = SigningKey.generate()
    d = RunDeclaration("b", "ft", "fine-tuning", "acme", "llama", 9, "k" * 64, claim(key))
    envelope = d.sign(key)
    assert RunDeclaration.verified(envelope, key.public_key) == d
    with pytest.raises(VerificationError, match="does not verify"):
        RunDeclaration.verified(
            Envelope(envelope.payload + b" ", envelope.payload_type, envelope.signatures),
            key.public_key,
        )
