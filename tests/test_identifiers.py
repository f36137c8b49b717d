"""The one identifier rule, the free-text rule, and escaping for display."""

from __future__ import annotations

import pytest

from flopwatch.identifiers import as_text, identifier_problem, shown, text_problem

GOOD = [
    "slurm:cluster-a/123456",
    "k8s:c/ns/pod-0",
    "GPU-5f2e1a3b-0000-1111-2222-333344445555",
    "MIG-GPU-1/1/0",
    "a job with spaces",
    "節點-1",  # letters of any script
    "a\u0378b",  # unassigned (Cn): which are depends on the Unicode version, so allowed
]

BAD = {  # name: (identifier, the character that makes it one no longer)
    "NUL": ("job\x00a", "\x00"),
    "ESC sequence": ("\x1b[31mred", "\x1b"),
    "newline": ("node\nforged log line", "\n"),
    "carriage return": ("node\r", "\r"),
    "tab": ("a\tb", "\t"),
    "DEL": ("a\x7f", "\x7f"),
    "C1 control": ("a\x9bb", "\x9b"),
    "zero-width joiner": ("a\u200db", "\u200d"),
    "right-to-left override": ("abc\u202egpj.exe", "\u202e"),
    "byte-order mark": ("\ufeffnode", "\ufeff"),
    "line separator": ("a\u2028b", "\u2028"),
    "paragraph separator": ("a\u2029b", "\u2029"),
    "no-break space": ("a\u00a0b", "\u00a0"),
    "ideographic space": ("a\u3000b", "\u3000"),
    "lone surrogate": ("a\ud800b", "\ud800"),
    "private use": ("a\ue000b", "\ue000"),
}


@pytest.mark.parametrize("value", GOOD)
def test_printable_identifiers_pass(value: str) -> None:
    assert identifier_problem(value, 256) is None


@pytest.mark.parametrize("name", sorted(BAD))
def test_identifiers_with_unprintable_characters_are_refused_saying_which(name: str) -> None:
    value, bad = BAD[name]
    problem = identifier_problem(value, 256)
    assert problem is not None
    assert f"U+{ord(bad):04X}" in problem
    assert f"position {value.index(bad)}" in problem


def test_identifiers_are_bounded_and_not_empty() -> None:
    assert identifier_problem("x" * 64, 64) is None
    assert "longer than 64" in (identifier_problem("x" * 65, 64) or "")
    assert identifier_problem("", 64) == "is empty"


def test_free_text_may_break_lines_but_holds_no_other_control_character() -> None:
    assert text_problem("", 10) is None
    assert text_problem("line one\n\tline two\r\n", 100) is None
    assert "U+0000" in (text_problem("a\x00b", 100) or "")
    assert "U+001B" in (text_problem("\x1b[2J", 100) or "")
    assert "longer than 3" in (text_problem("abcd", 3) or "")


def test_as_text_makes_any_text_acceptable_free_text() -> None:
    for value in ["plain", "a\x00b\x1b[2J", "x" * 500, "\ud800", "multi\nline"]:
        text = as_text(value, 200)
        assert text_problem(text, 200) is None
    assert as_text("plain\nerror", 200) == "plain\nerror"  # acceptable text is kept as it is
    assert as_text("a\x00b", 200) == "a\\x00b"


def test_shown_escapes_everything_a_terminal_would_act_on() -> None:
    assert shown("slurm:c/1 with spaces") == "slurm:c/1 with spaces"
    assert shown("\x1b[2J\x1b[31mnode\nfake") == "\\x1b[2J\\x1b[31mnode\\nfake"
    assert shown("a\x00\r\t\x7f\x9b") == "a\\x00\\r\\t\\x7f\\x9b"
    assert shown("rtl\u202eexe\u2028") == "rtl\\u202eexe\\u2028"
    assert shown("節點") == "節點"
    for value, _ in BAD.values():
        out = shown(value)
        assert out.isprintable(), out
        assert identifier_problem(out, 1000) is None
