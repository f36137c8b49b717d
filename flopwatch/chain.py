"""Judge a record against the records of the same key already held. Pure.

Records of one key form a hash chain: record n names the digest of record n-1. A holder (the
collector, or the offline verifier walking a report) looks up the neighbours it has and asks
`judge`. Records may arrive out of order or with gaps; a gap is accepted and reported, never
hidden, and a missing record that arrives later fills it if it links with both neighbours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"  # the same record is already held
    FORK = "fork"  # conflicts with a held record: two different records claim one place


@dataclass(frozen=True)
class Neighbours:
    """What the holder already has around sequence n for this key."""

    same: bytes | None = None  # digest held at n
    before: bytes | None = None  # digest held at n-1
    after_previous: bytes | None = None  # previous_digest of the record held at n+1


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    detail: str = ""


def judge(sequence: int, digest: bytes, previous_digest: bytes, held: Neighbours) -> Judgement:
    if held.same is not None:
        if held.same == digest:
            return Judgement(Verdict.DUPLICATE)
        return Judgement(Verdict.FORK, f"a different record is already held at sequence {sequence}")
    if held.before is not None and held.before != previous_digest:
        return Judgement(Verdict.FORK, f"does not link to the held record {sequence - 1}")
    if held.after_previous is not None and held.after_previous != digest:
        return Judgement(Verdict.FORK, f"the held record {sequence + 1} links to another record")
    return Judgement(Verdict.ACCEPT)


def missing_sequences(held: list[int]) -> list[tuple[int, int]]:
    """Ranges [first, last] of sequence numbers below the highest held that are not held."""
    out: list[tuple[int, int]] = []
    expected = 1
    for s in sorted(held):
        if s > expected:
            out.append((expected, s - 1))
        expected = max(expected, s + 1)
    return out
