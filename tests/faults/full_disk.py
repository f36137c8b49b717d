"""Disks that fill up, for the spool fault tests.

`FullDisk` stands in for the `os` module inside flopwatch.agent.spool.store (monkeypatched): while
`full` is set every write fails with ENOSPC, segment frames and the ack state alike. `tmpfs` mounts
a real, tiny filesystem where the kernel itself says ENOSPC; it needs root and mount rights (CI
containers often lack them), so tests skip it elsewhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


class FullDisk:
    def __init__(self) -> None:
        self.full = threading.Event()
        self.refused = 0  # writes refused so far

    def write(self, fd: int, data: bytes) -> int:
        if self.full.is_set():
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "64k") mounted at `path` for the duration; skips the test where
    this process may not mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
