"""Statements that match many keys at once, with every key a bound parameter.

Identifiers reach these statements from signed records: a job id, a GPU uuid. They are bound as
parameters, one per value, never packed into a JSON text for `json_each` to unpack: JSON
functions read text up to its first NUL and compare what they unpacked, so an id holding one
would match another id, or none (a total overwritten, a writer's look-up missing its key). The
verifier refuses such ids; this keeps the store right whatever it is given.

`select_matching` runs a statement whose `{rows}` stands for a VALUES list of the rows to match,
once per chunk of at most `MAX_PARAMETERS` parameters (SQLite builds before 3.32 allow 999).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from typing import Any

MAX_PARAMETERS = 999
ROWS = "{rows}"


def _chunks(rows: Sequence[Sequence[object]]) -> Iterator[Sequence[Sequence[object]]]:
    per = max(1, MAX_PARAMETERS // len(rows[0]))
    for i in range(0, len(rows), per):
        yield rows[i : i + per]


def values(rows: Sequence[Sequence[object]]) -> tuple[str, list[object]]:
    """'VALUES (?, ?), (?, ?)' for `rows` (all of one width), and their parameters in order."""
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    return "VALUES " + ", ".join([one] * len(rows)), [v for row in rows for v in row]


def select_matching(
    db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]
) -> list[Any]:
    """The result rows of `sql` with `{rows}` standing for `rows` as a VALUES list, over all
    chunks, in chunk order (order within a chunk is as `sql` orders it)."""
    if ROWS not in sql:
        raise ValueError("the statement has no {rows} to match")
    out: list[Any] = []
    if not rows:
        return out
    for part in _chunks(rows):
        text, params = values(part)
        out += db.execute(sql.replace(ROWS, text), params).fetchall()
    return out


def keyed(keys: Collection[str]) -> list[tuple[str]]:
    """One-column rows of `keys`, sorted: for `... WHERE key IN ({rows})`."""
    return [(k,) for k in sorted(keys)]


def execute_matching(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """`select_matching` for a statement that returns nothing (an UPDATE or DELETE)."""
    if ROWS not in sql:
        raise ValueError("the statement has no {rows} to match")
    for part in _chunks(rows) if rows else ():
        text, params = values(part)
        db.execute(sql.replace(ROWS, text), params)
