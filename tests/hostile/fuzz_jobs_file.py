"""Fuzz target: a JOBS.json file (`flopwatch replay --jobs`, calibration), read by
`flopwatch.jobs_file.load_jobs`. Any input is refused with a ConfigError or read into job
windows that hold: an identifier for a job id, a pid, and a window inside int64 nanoseconds.

    .venv/bin/python tests/hostile/fuzz_jobs_file.py -atheris_runs=100000 [CORPUS_DIR]

The pytest smoke is tests/hostile/test_fuzz_files.py (fuzz_common.smoke_inputs).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.hostile.fuzz_common import fuzz_main, instrumented

with instrumented(__name__):
    from flopwatch.errors import ConfigError
    from flopwatch.identifiers import identifier_problem
    from flopwatch.jobs_file import load_jobs
    from flopwatch.limits import DEFAULT_LIMITS

PATH = Path(tempfile.mkdtemp(prefix="flopwatch-fuzz-jobs-")) / "JOBS.json"
SEEDS = [
    json.dumps(
        [
            {"job": "calib-bf16", "pid": 4242, "start": 1700000000, "end": 1700000060},
            {"job": "x", "pid": 0, "start": 1.5, "end": 2.25, "precision": "fp8"},
        ]
    ).encode(),
    b"[]",
    b'[{"job": "a", "pid": 1, "start": 0, "end": 1e308}]',
]
TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e308",
    b"-1e308",
    b"1e-320",
    b"18446744073709551616",
    b"-1",
    b"0",
    b"true",
    b"null",
    b'""',
    b'"\\u0000"',
    b'"\\u001b[2J"',
    b'"\\ud800"',
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b'"job"',
    b'"pid"',
    b'"start"',
    b'"end"',
    b'"precision"',
    b'"bf16"',
    b"\xff",
    b"\x00",
    b" " * 100,
]


def test_one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    try:
        windows = load_jobs(PATH)
    except ConfigError:
        return
    for w in windows:
        assert identifier_problem(w.job_id, DEFAULT_LIMITS.max_identifier_chars) is None, w
        assert isinstance(w.pid, int) and w.pid >= 0, w
        assert 0 <= w.start_ns < w.end_ns < 2**63, w


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS)
