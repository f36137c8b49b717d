"""The entry point: a reader that goes away ends every command quietly (exit 141, no traceback).

Each command runs as a real process whose stdout is a pipe already closed at its read end, the
strictest case of `flopwatch verify --json FILE | head -1`: the first write fails with EPIPE.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flopwatch.cli.main import EXIT_BROKEN_PIPE
from tests.paths import TAMPER

VALID = str(TAMPER / "valid.bundle")
PEM = str(TAMPER / "collector-key.pub.pem")


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        return subprocess.run(
            [sys.executable, "-m", "flopwatch", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["verify", VALID, "--collector-key", PEM, "--json"],
        ["verify", VALID, "--collector-key", PEM],
    ],
    ids=["verify-json", "verify-steps"],
)
def test_a_closed_pipe_ends_the_command_quietly(args: list[str]) -> None:
    done = run_into_closed_pipe(*args)
    assert done.stderr.decode() == ""
    assert done.returncode == EXIT_BROKEN_PIPE == 141
