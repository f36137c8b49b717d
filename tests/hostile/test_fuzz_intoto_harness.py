"""The atheris harness of in-toto statements (tests/hostile/fuzz_intoto.py) still runs: a short,
bounded session (`fuzz_common.short_session`). `make fuzz` runs it for long. Skipped where
atheris is not installed."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.fuzz_common import short_session


def test_the_statement_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    corpus = short_session(Path(__file__).with_name("fuzz_intoto.py"), 2000, tmp_path)
    assert {p.name for p in corpus.iterdir()} >= {"statement", "payload"}
