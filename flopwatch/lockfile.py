"""An exclusive lock that one process holds for as long as it runs, through a lock file.

`hold(path, what, hint=...)` takes an flock(2) lock on `path` (created if missing, mode 0644)
without waiting, and writes the holder's pid into the file. A second process asking for it gets
a ConfigError at once that names `what` and the holder's pid. The kernel releases the lock when
the holder closes it or dies, however it dies (SIGKILL included), so a stale lock file is
harmless: the file is left in place and the next holder takes it over. The lock is shared
by no child process (the descriptor is close-on-exec).

Used for the agent's state directory (`flopwatch.agent.state_dir`) and a SQLite collector's
database (`flopwatch.collector.store.sqlite.store`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from flopwatch.errors import ConfigError

_PID_BYTES = 32


class HeldLock:
    """A lock this process holds; `release` (or leaving a `with` block) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def hold(path: Path, what: str, *, hint: str) -> HeldLock:
    """Take the lock at `path` for `what` (named in the refusal, e.g. "state directory X");
    `hint` ends the refusal (what to do instead)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot lock {what}: {path}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise ConfigError(f"{what} is in use by {holder} (lock file {path}); {hint}") from None
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"cannot lock {what}: {path}: {e.strerror}") from e
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"cannot lock {what}: {path}: {e.strerror}") from e
    return HeldLock(path, fd)


def _holder(fd: int) -> str:
    """ "pid N" as the holder wrote it, or "another process" if it has not written it yet."""
    try:
        text = os.pread(fd, _PID_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"
