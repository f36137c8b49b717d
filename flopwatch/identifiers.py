"""The one rule for identifiers and text that arrive from outside, and how to show them. Pure.

An identifier names something: a node, a cluster, a GPU (uuid, serial, MIG instance), a job, a
job's source, an agent version. Every one a record carries is checked once, by the verifier
(`flopwatch.verify.record`), against `identifier_problem`: 1 to `max_chars` characters, each of
them printable. Not printable, whatever the Unicode version:

    Cc  control characters (NUL, ESC, newline, DEL, the C1 range)
    Cf  format characters (zero-width joiners, bidirectional overrides: text that displays
        as something other than what it is)
    Cs  surrogates (not text; PostgreSQL and UTF-8 cannot hold them)
    Co  private use
    Zl, Zp, and every space but U+0020 (a name that looks like another)

Unassigned code points (Cn) are allowed: which ones are unassigned changes with the Unicode
version, and an offline verifier on another Python must reach the same verdict.

Free text (a gap's or a binding's detail, a GPU's marketing name) is bounded and may hold
tabs and line breaks, but no other control character (`text_problem`): no NUL, which PostgreSQL
text cannot store, and no ESC, which starts a terminal escape sequence.

Whatever the checks, anything shown to a person goes through `shown`, which escapes what is not
printable (a newline as \\n, ESC as \\x1b), so no text from outside moves a cursor, recolours a
terminal or forges a log line.
"""

from __future__ import annotations

import unicodedata

_NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Zs"})
_TEXT_WHITESPACE = frozenset("\t\n\r")


def _unprintable(ch: str) -> bool:
    if " " <= ch <= "~":  # printable ASCII: the common case, without a table look-up
        return False
    return unicodedata.category(ch) in _NOT_PRINTABLE


def _first(value: str, allowed: frozenset[str] = frozenset()) -> tuple[int, str] | None:
    """The first unprintable character not in `allowed`, and where it is."""
    if value.isascii() and value.isprintable():  # in C: what nearly every id is
        return None
    for i, ch in enumerate(value):
        if _unprintable(ch) and ch not in allowed:
            return i, ch
    return None


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.category(ch)})"


def identifier_problem(value: str, max_chars: int) -> str | None:
    """What is wrong with `value` as an identifier, or None if it is one."""
    if not value:
        return "is empty"
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters"
    found = _first(value)
    if found is not None:
        return f"holds the unprintable character {_describe(found[1])} at position {found[0]}"
    return None


def text_problem(value: str, max_chars: int) -> str | None:
    """What is wrong with `value` as free text (may be empty, may break lines), or None."""
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters"
    found = _first(value, _TEXT_WHITESPACE)
    if found is not None:
        return f"holds the control character {_describe(found[1])} at position {found[0]}"
    return None


def as_text(value: str, max_chars: int) -> str:
    """`value` made acceptable as free text: cut to `max_chars`, every other unprintable
    character (line breaks and tabs aside) escaped. For text a signer takes from elsewhere,
    such as an error message, so that its own record never fails `text_problem`."""
    if text_problem(value, max_chars) is None:
        return value
    out = "".join(ch if ch in _TEXT_WHITESPACE else _escape(ch) for ch in value)
    return out[:max_chars]


def _escape(ch: str) -> str:
    if not _unprintable(ch) or ch == " ":
        return ch
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(value: str) -> str:
    """`value` safe to print or log: each unprintable character as a Python-style escape
    (ESC as \\x1b, a newline as \\n, U+202E as \\u202e), a backslash as itself. Printable text,
    including spaces, is unchanged, so ordinary ids read as they are."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(_escape(ch) for ch in value)
