"""Witness policies in the tlog-policy format: the spec's example shape, k of n, bad files."""

from __future__ import annotations

import pytest

from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Ed25519NoteSigner
from flopwatch.tlog.policy import parse_policy


def wkey(name: str) -> str:
    return Cosigner(name, SigningKey.generate().private_key).verifier.vkey()


LOG_VKEY = Ed25519NoteSigner("log.example", SigningKey.generate().private_key).verifier.vkey()
X = [wkey(f"x{i}.example") for i in range(3)]
Y = [wkey(f"y{i}.example") for i in range(3)]

SPEC_SHAPE = f"""\
# the example of c2sp.org/tlog-policy, with real keys
log {LOG_VKEY} https://log.example/

witness X1 {X[0]}
witness X2 {X[1]}
witness X3 {X[2]}
group X-witnesses 2 X1 X2 X3

witness Y1 {Y[0]} https://y1.example/
  witness Y2 {Y[1]}
witness\tY3 {Y[2]}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_the_spec_example_policy_needs_two_x_and_one_y():
    policy = parse_policy(SPEC_SHAPE.encode())
    assert policy.logs[0].url == "https://log.example/"
    assert policy.witnesses["Y1"].url == "https://y1.example/"
    assert policy.witnesses["X1"].url is None
    assert policy.satisfied({"X1", "X3", "Y2"})
    assert not policy.satisfied({"X1", "Y2"})
    assert not policy.satisfied({"X1", "X2", "X3"})
    assert not policy.satisfied({"X-witnesses", "Y-witnesses"})  # groups are not witnesses
    assert set(policy.cosignature_verifiers()) == {"X1", "X2", "X3", "Y1", "Y2", "Y3"}


def test_k_of_n_and_none():
    two_of_two = f"witness a {X[0]}\nwitness b {X[1]}\ngroup g all a b\nquorum g\n"
    policy = parse_policy(two_of_two.encode())
    assert policy.satisfied({"a", "b"}) and not policy.satisfied({"a"})
    one_of_two = two_of_two.replace("all", "1")
    assert parse_policy(one_of_two.encode()).satisfied({"b"})
    assert not parse_policy(one_of_two.encode()).satisfied(set())
    assert parse_policy(b"quorum none\n").satisfied(set())
    assert parse_policy(f"witness a {X[0]}\nquorum a\n".encode()).satisfied({"a"})


def test_deeply_shared_groups_are_evaluated_in_linear_time():
    lines = [f"witness w {X[0]}", "group g0 any w", "group g1 any w"]
    lines += [f"group g{i} 2 g{i - 1} g{i - 2}" for i in range(2, 200)]
    policy = parse_policy(("\n".join([*lines, "quorum g199"]) + "\n").encode())
    assert policy.satisfied({"w"}) and not policy.satisfied(set())


BAD = {
    "no quorum": f"witness a {X[0]}\n",
    "two quorums": "quorum none\nquorum none\n",
    "undefined member": f"witness a {X[0]}\ngroup g all a b\nquorum g\n",
    "member defined later": f"group g all a\nwitness a {X[0]}\nquorum g\n",
    "quorum undefined": "quorum nobody\n",
    "threshold zero": f"witness a {X[0]}\ngroup g 0 a\nquorum g\n",
    "threshold above n": f"witness a {X[0]}\ngroup g 2 a\nquorum g\n",
    "threshold leading zero": f"witness a {X[0]}\ngroup g 01 a\nquorum g\n",
    "member twice": f"witness a {X[0]}\ngroup g any a a\nquorum g\n",
    "name twice": f"witness a {X[0]}\nwitness a {X[1]}\nquorum a\n",
    "reserved name": f"witness none {X[0]}\nquorum none\n",
    "duplicate key": f"witness a {X[0]}\nwitness b {X[0]}\nquorum a\n",
    "log key as witness": f"witness a {LOG_VKEY}\nquorum a\n",
    "witness key as log": f"log {X[0]}\nquorum none\n",
    "unknown line": "quorum none\nwitnesses a b\n",
    "control character": "quorum none\x0c\n",
    "not utf-8": b"quorum none\n# \xff\n".decode("latin-1"),
    "bad vkey": "witness a nope+00000000+AAAA\nquorum a\n",
    "too many items": "".join(f"witness w{i} {wkey('k')}\n" for i in range(257)) + "quorum w0\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_policies_are_refused_with_the_line(name):
    data = BAD[name].encode("latin-1" if name == "not utf-8" else "utf-8")
    with pytest.raises(VerificationError) as e:
        parse_policy(data)
    assert e.value.reason == "malformed_policy"
    assert e.value.message
