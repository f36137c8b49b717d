"""SQLite statements matching many keys bind each key as its own parameter (no json_each)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flopwatch.collector.store.sqlite.matching import MAX_PARAMETERS, keyed, select_matching, values

SOURCES = Path(__file__).parents[3] / "flopwatch" / "collector" / "store"


def _table(rows: list[tuple[str, int]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k TEXT, n INTEGER, PRIMARY KEY (k, n))")
    db.executemany("INSERT INTO t VALUES (?, ?)", rows)
    return db


def test_keys_that_share_a_prefix_up_to_a_nul_match_only_themselves() -> None:
    db = _table([("job\x00a", 1), ("job\x00b", 2), ("job", 3)])
    found = select_matching(
        db, "SELECT k, n FROM t WHERE k IN ({rows}) ORDER BY n", [("job\x00a",)]
    )
    assert found == [("job\x00a", 1)]


@pytest.mark.parametrize("width", [1, 2])
def test_more_keys_than_one_statement_may_bind_are_matched_in_chunks(width: int) -> None:
    n = 3 * MAX_PARAMETERS + 7
    db = _table([(f"k{i}", i) for i in range(n)])
    if width == 1:
        found = select_matching(
            db, "SELECT k FROM t WHERE k IN ({rows}) ORDER BY k", keyed([f"k{i}" for i in range(n)])
        )
        assert sorted(r[0] for r in found) == sorted(f"k{i}" for i in range(n))
    else:
        wanted = [(f"k{i}", i) for i in range(0, n, 2)]
        found = select_matching(db, "SELECT k, n FROM t WHERE (k, n) IN ({rows})", wanted)
        assert sorted(found) == sorted(wanted)


def test_nothing_to_match_runs_no_statement() -> None:
    assert select_matching(_table([]), "SELECT k FROM t WHERE k IN ({rows})", []) == []


def test_no_store_passes_identifiers_through_sql_json_functions() -> None:
    for path in SOURCES.rglob("*.py"):
        text = path.read_text()
        for fn in ("json_each", "json_extract", "->>", "json_array_elements", "jsonb_"):
            if fn in text:
                assert path.name == "matching.py" and fn == "json_each", f"{fn} in {path}"


def test_no_store_matches_several_columns_against_a_values_list() -> None:
    """`(a, b) IN (VALUES ...)` makes SQLite (3.40) scan the whole table, once per statement:
    with a commit's reads of job_gpus, gpu_totals and the log's nodes that made each commit
    slower the more the database held. Several columns are matched by a join with the VALUES
    (`WITH w (...) AS ({rows}) ... JOIN`), which searches the table's key."""
    for path in (SOURCES / "sqlite").rglob("*.py"):
        text = " ".join(path.read_text().split())
        assert ") IN ({rows})" not in text.replace('" "', ""), path


def test_a_join_with_the_values_searches_the_key_where_a_row_value_list_scans() -> None:
    db = _table([(f"k{i}", i) for i in range(100)])

    def plan(sql: str) -> str:
        text, params = values([("k1", 1), ("k2", 2)])
        rows = db.execute("EXPLAIN QUERY PLAN " + sql.replace("{rows}", text), params)
        return " ".join(r[3] for r in rows)

    assert "SCAN t" in plan("SELECT k, n FROM t WHERE (k, n) IN ({rows})")
    joined = plan(
        "WITH w (k, n) AS ({rows}) SELECT t.k, t.n FROM w JOIN t ON t.k = w.k AND t.n = w.n"
    )
    assert "SEARCH t" in joined and "SCAN t" not in joined
