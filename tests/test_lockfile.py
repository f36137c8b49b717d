"""flopwatch.lockfile: one holder at a time, across processes, released however the holder ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flopwatch.errors import ConfigError
from flopwatch.lockfile import hold

_HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from flopwatch.lockfile import hold\n"
    "lock = hold(Path(sys.argv[1]), 'the thing', hint='wait')\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"  # holds until the test closes its stdin
)


@contextmanager
def holder(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the lock at `path` (it has, once this yields)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == b"held\n"
        yield proc
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    path = tmp_path / "x.lock"
    with holder(path) as proc:
        with pytest.raises(ConfigError) as refused:
            hold(path, "state directory /s", hint="stop the other one")
        assert str(refused.value) == (
            f"state directory /s is in use by pid {proc.pid} (lock file {path}); stop the other one"
        )
        assert proc.poll() is None  # the holder is unharmed
    with hold(path, "the thing", hint="wait") as lock:  # free again once the holder is gone
        assert path.read_text() == f"{os.getpid()}\n"
        assert lock.path == path


def test_a_killed_holder_leaves_a_lock_file_but_no_lock(tmp_path):
    path = tmp_path / "x.lock"
    with holder(path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert path.exists()
        hold(path, "the thing", hint="wait").release()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    path = tmp_path / "x.lock"
    first = hold(path, "the thing", hint="wait")
    with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}"):
        hold(path, "the thing", hint="wait")
    first.release()
    first.release()  # twice is harmless
    hold(path, "the thing", hint="wait").release()


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "x.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="cannot lock the thing"):
        hold(tmp_path / "x.lock", "the thing", hint="wait")
    assert not (tmp_path / "elsewhere").exists()
