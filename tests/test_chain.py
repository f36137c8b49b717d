import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.chain import Link, Neighbours, Verdict, judge, judge_after, missing_sequences

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_first_record_with_nothing_held_is_accepted() -> None:
    assert judge(1, A, b"", Neighbours()).verdict is Verdict.ACCEPT


def test_same_record_again_is_duplicate() -> None:
    assert judge(3, B, A, Neighbours(same=B)).verdict is Verdict.DUPLICATE


def test_different_record_at_held_sequence_is_fork() -> None:
    assert judge(3, C, A, Neighbours(same=B)).verdict is Verdict.FORK


def test_record_not_linking_to_held_predecessor_is_fork() -> None:
    assert judge(4, C, A, Neighbours(before=B)).verdict is Verdict.FORK


def test_late_record_must_match_successors_link() -> None:
    assert judge(4, B, A, Neighbours(before=A, after_previous=B)).verdict is Verdict.ACCEPT
    assert judge(4, C, A, Neighbours(before=A, after_previous=B)).verdict is Verdict.FORK


def test_record_after_a_gap_is_accepted() -> None:
    assert judge(9, C, B, Neighbours()).verdict is Verdict.ACCEPT


def test_missing_sequences_lists_holes_below_highest() -> None:
    assert missing_sequences([]) == []
    assert missing_sequences([1, 2, 3]) == []
    assert missing_sequences([2, 5, 6, 9]) == [(1, 1), (3, 4), (7, 8)]


def test_fork_names_the_held_record_it_conflicts_with() -> None:
    assert judge(3, C, A, Neighbours(same=B)).conflict_at == 3
    assert judge(4, C, A, Neighbours(before=B)).conflict_at == 3
    assert judge(4, C, A, Neighbours(after_previous=B)).conflict_at == 5
    assert judge(4, B, A, Neighbours(before=A)).conflict_at is None


def test_neighbours_around_reads_the_held_records_beside_a_sequence() -> None:
    held = {4: (A, b""), 5: (B, A), 6: (C, B)}
    assert Neighbours.around(5, held.get) == Neighbours(same=B, before=A, after_previous=B)
    assert Neighbours.around(7, held.get) == Neighbours(before=C)
    assert Neighbours.around(3, held.get) == Neighbours(after_previous=b"")
    assert Neighbours.around(9, held.get) == Neighbours()


def test_neighbours_held_first_then_pending() -> None:
    held = Neighbours(same=A)
    pending = Neighbours(same=B, before=C)
    assert held.or_else(pending) == Neighbours(same=A, before=C)
    assert Neighbours().or_else(pending) == pending


def test_judge_after_is_judge_against_one_held_record() -> None:
    first = Link(1, A, b"")
    assert judge_after(first, Link(2, B, A)).verdict is Verdict.ACCEPT
    assert judge_after(first, Link(1, A, b"")).verdict is Verdict.DUPLICATE
    fork = judge_after(first, Link(1, C, b""))
    assert (fork.verdict, fork.conflict_at) == (Verdict.FORK, 1)
    unlinked = judge_after(first, Link(2, B, C))
    assert (unlinked.verdict, unlinked.conflict_at) == (Verdict.FORK, 1)
    assert judge_after(first, Link(5, B, C)).verdict is Verdict.ACCEPT  # a gap


def _chain(n: int) -> list[Link]:
    links = [Link(1, bytes([1]) * 32, b"")]
    for s in range(2, n + 1):
        links.append(Link(s, bytes([s]) * 32, links[-1].digest))
    return links


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.integers(1, n), min_size=2, max_size=n, unique=True),
            st.sampled_from(["none", "fork", "unlinked", "duplicate"]),
        )
    )
)
def test_a_walk_and_the_collectors_judgement_agree(case: tuple[int, list[int], str]) -> None:
    """Records of one key, in any order: the collector judges each against what it holds, the
    verifier walks them sorted with `judge_after`. Both find a fault, or neither does."""
    n, order, tamper = case
    links = {link.sequence: link for link in _chain(n)}
    records = [links[s] for s in order]
    last = records[-1]
    if tamper == "fork":
        records.append(Link(last.sequence, b"x" * 32, last.previous_digest))
    elif tamper == "unlinked" and last.sequence > 1:
        records[-1] = Link(last.sequence, last.digest, b"y" * 32)
    elif tamper == "duplicate":
        records.append(last)

    held: dict[int, tuple[bytes, bytes]] = {}
    collector_faults = 0
    for r in records:
        verdict = judge(
            r.sequence, r.digest, r.previous_digest, Neighbours.around(r.sequence, held.get)
        )
        if verdict.verdict is Verdict.ACCEPT:
            held[r.sequence] = (r.digest, r.previous_digest)
        else:
            collector_faults += 1

    walk = sorted(records, key=lambda r: r.sequence)
    walk_faults = sum(
        judge_after(a, b).verdict is not Verdict.ACCEPT for a, b in itertools.pairwise(walk)
    )
    assert (collector_faults > 0) == (walk_faults > 0)
