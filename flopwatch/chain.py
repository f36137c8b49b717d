"""Judge a record against the records of the same key already held. Pure.

Records of one key form a hash chain: record n names the digest of record n-1. A holder looks up
the neighbours it has (`Neighbours.around`) and asks `judge`: the collector's ingest batch and
both stores against what they hold, the offline verifier (`judge_after`) for each record of a
report against the one before it. Records may arrive out of order or with gaps; a gap is accepted
and reported, never hidden, and a missing record that arrives later fills it if it links with
both neighbours.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

# A held record's (digest, previous_digest), by sequence number; None if not held.
Lookup = Callable[[int], tuple[bytes, bytes] | None]


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

    @classmethod
    def around(cls, sequence: int, lookup: Lookup) -> Neighbours:
        """The neighbours of `sequence`, from the held records `lookup` finds."""
        same, before, after = (lookup(sequence + i) for i in (0, -1, 1))
        return cls(
            same=None if same is None else same[0],
            before=None if before is None else before[0],
            after_previous=None if after is None else after[1],
        )

    def or_else(self, other: Neighbours) -> Neighbours:
        """These neighbours, each one not held here taken from `other` (e.g. what a batch has
        accepted but not yet committed)."""
        return Neighbours(
            same=self.same if self.same is not None else other.same,
            before=self.before if self.before is not None else other.before,
            after_previous=(
                self.after_previous if self.after_previous is not None else other.after_previous
            ),
        )


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    detail: str = ""
    # The sequence of the held record a FORK conflicts with: n (another record holds its place),
    # n-1 (it does not link to the record before) or n+1 (the record after links to another).
    conflict_at: int | None = None


def judge(sequence: int, digest: bytes, previous_digest: bytes, held: Neighbours) -> Judgement:
    if held.same is not None:
        if held.same == digest:
            return Judgement(Verdict.DUPLICATE)
        return Judgement(
            Verdict.FORK, f"a different record is already held at sequence {sequence}", sequence
        )
    if held.before is not None and held.before != previous_digest:
        return Judgement(
            Verdict.FORK, f"does not link to the held record {sequence - 1}", sequence - 1
        )
    if held.after_previous is not None and held.after_previous != digest:
        return Judgement(
            Verdict.FORK, f"the held record {sequence + 1} links to another record", sequence + 1
        )
    return Judgement(Verdict.ACCEPT)


@dataclass(frozen=True)
class Link:
    """A record's place in its key's chain."""

    sequence: int
    digest: bytes
    previous_digest: bytes


def judge_after(held: Link, record: Link) -> Judgement:
    """`judge` of `record` when the one record of its key held is `held` (at a lower or the same
    sequence): how a walk over a key's records in sequence order checks each against the last."""

    def lookup(sequence: int) -> tuple[bytes, bytes] | None:
        return (held.digest, held.previous_digest) if sequence == held.sequence else None

    return judge(
        record.sequence,
        record.digest,
        record.previous_digest,
        Neighbours.around(record.sequence, lookup),
    )


def missing_sequences(held: list[int]) -> list[tuple[int, int]]:
    """Ranges [first, last] of sequence numbers below the highest held that are not held."""
    out: list[tuple[int, int]] = []
    expected = 1
    for s in sorted(held):
        if s > expected:
            out.append((expected, s - 1))
        expected = max(expected, s + 1)
    return out
