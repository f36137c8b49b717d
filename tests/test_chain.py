from flopwatch.chain import Neighbours, Verdict, judge, missing_sequences

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
