"""flopwatch.jobs_file against hostile input: a JOBS.json file from anyone is read into job
windows or refused with a
ConfigError naming what is wrong; never a traceback (what the fuzz target found: infinities,
NaN, bytes that are not UTF-8, numbers past int's digits, nesting past the recursion limit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flopwatch.errors import ConfigError
from flopwatch.jobs_file import MAX_UNIX_S, load_jobs


def jobs(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "JOBS.json"
    path.write_bytes(data)
    return path


def window(**fields: object) -> bytes:
    item = {"job": "calib", "pid": 7, "start": 100, "end": 160, **fields}
    return json.dumps([item]).encode()


def test_a_good_file_is_read(tmp_path):
    [w] = load_jobs(jobs(tmp_path, window(start=1.5, end=MAX_UNIX_S - 1, precision="fp8")))
    assert (w.job_id, w.pid, w.start_ns, w.end_ns) == (
        "calib",
        7,
        1_500_000_000,
        (MAX_UNIX_S - 1) * 10**9,
    )
    assert w.end_ns < 2**63


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[{"job": "a", "pid": 1, "start": 0, "end": 1e999}]', "'end' must be unix seconds"),
        (b'[{"job": "a", "pid": 1, "start": NaN, "end": 5}]', "'start' must be unix seconds"),
        (b'[{"job": "a", "pid": 1, "start": -Infinity, "end": 5}]', "'start' must be unix"),
        (b'[{"job": "a", "pid": 1, "start": -1, "end": 5}]', "'start' must be unix seconds"),
        (window(end=MAX_UNIX_S), "'end' must be unix seconds from 0 to"),
        (b'[{"job": "a\\u001b[2J", "pid": 1, "start": 0, "end": 5}]', "U+001B"),
        (b'[{"job": "a\\ud800", "pid": 1, "start": 0, "end": 5}]', "U+D800"),
        (b'[{"job": "a\xf8", "pid": 1}]', "byte 11 is not UTF-8"),
        (b"[" + b"1" * 5000 + b"]", "is not JSON"),
        (b"[" * 100_000, "is not JSON"),
    ],
)
def test_what_the_fuzzer_found_is_a_clear_error(tmp_path, data, message):
    with pytest.raises(ConfigError, match="jobs") as err:
        load_jobs(jobs(tmp_path, data))
    assert message in str(err.value)
