"""The atheris harness of in-toto statements (tests/hostile/fuzz_intoto.py) still runs: a short,
bounded session. `make fuzz` runs it for long. Skipped where atheris is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_intoto.py")


def test_the_statement_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-atheris_runs=2000",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 2000 in" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert {p.name for p in (tmp_path / "corpus").iterdir()} >= {"statement", "payload"}
