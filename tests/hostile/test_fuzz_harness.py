"""The atheris harness (tests/hostile/fuzz_envelope.py) still runs: a short, bounded session.

`make fuzz` runs it for long; this keeps it from rotting. Skipped where atheris is not installed
(it ships binary wheels for Linux only).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_envelope.py")


def test_fuzz_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-atheris_runs=3000",
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
    assert "Done 3000 in" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert {p.name for p in (tmp_path / "corpus").iterdir()} >= {"envelope", "payload", "recipe"}


def test_the_log_parsers_harness_runs_a_short_session_without_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS.with_name("fuzz_tlog.py")),
            "-atheris_runs=3000",
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
    assert "Done 3000 in" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert {p.name for p in (tmp_path / "corpus").iterdir()} >= {"checkpoint", "request", "policy"}
