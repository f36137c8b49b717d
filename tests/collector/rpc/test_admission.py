"""Peers of a call and the stream caps per address and per certificate."""

from __future__ import annotations

import pytest

from flopwatch.collector.rpc.admission import Peer, StreamCaps, address_of


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:51234", "::1"),
        ("ipv6:[::ffff:10.0.0.7]:51234", "10.0.0.7"),
        ("ipv6:[2001:db8::1]:7", "2001:db8::1"),
        ("unix:/run/x.sock", "unix"),
        ("", "unknown"),
        ("ipv4:", "unknown"),
    ],
)
def test_address_of_drops_the_port(peer: str, address: str) -> None:
    assert address_of(peer) == address


def test_streams_are_capped_per_address_and_per_certificate() -> None:
    caps = StreamCaps(per_address=2, per_certificate=3)
    a1, a2, b = Peer("10.0.0.1", "c1"), Peer("10.0.0.1", "c2"), Peer("10.0.0.2", "c1")
    assert caps.open(a1) is None and caps.open(a2) is None
    refused = caps.open(a1)
    assert refused is not None and "max_streams_per_address" in refused
    assert caps.open(b) is None
    assert caps.open(Peer("10.0.0.3", "c1")) is None  # c1: 3 streams now
    refused = caps.open(Peer("10.0.0.4", "c1"))
    assert refused is not None and "max_streams_per_certificate" in refused
    assert caps.open_streams() == 4
    caps.close(a1)
    assert caps.open(a1) is None  # room again


def test_zero_turns_a_cap_off() -> None:
    caps = StreamCaps(per_address=0, per_certificate=0)
    assert all(caps.open(Peer("10.0.0.1", "c")) is None for _ in range(1000))


def test_peer_key_names_address_and_certificate() -> None:
    assert Peer("10.0.0.1").key == "10.0.0.1"
    assert Peer("10.0.0.1", "ab12").key == "10.0.0.1 cert ab12"
