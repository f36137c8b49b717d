"""The atheris harnesses of envelopes (tests/hostile/fuzz_envelope.py) and of the log's parsers
(fuzz_tlog.py) still run: a short, bounded session each (`fuzz_common.short_session`).

`make fuzz` runs them for long; this keeps them from rotting. Skipped where atheris is not
installed (it ships binary wheels for Linux only).
"""

from __future__ import annotations

from pathlib import Path

from tests.hostile.fuzz_common import short_session

HERE = Path(__file__).parent


def test_fuzz_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    corpus = short_session(HERE / "fuzz_envelope.py", 3000, tmp_path)
    assert {p.name for p in corpus.iterdir()} >= {"envelope", "payload", "recipe"}


def test_the_log_parsers_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    corpus = short_session(HERE / "fuzz_tlog.py", 3000, tmp_path)
    assert {p.name for p in corpus.iterdir()} >= {"checkpoint", "request", "policy"}
