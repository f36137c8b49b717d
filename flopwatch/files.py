"""Writing the files that commands produce: one place, one set of rules.

Every command that writes a file (`flopwatch report --out`, `log tree-head --out`, `records
archive --out`, `certs`, the node and collector keys) goes through `write_file`, `write_output`
or, for data written in pieces (a large archive, in bounded memory), `open_output`:

1. The directory must already exist: a mistyped path is an error, not a new directory tree.
2. An existing file is replaced only with `force` (the command's `--force`); key and certificate
   files are never replaced (their writers never pass `force`).
3. Anything that is not a regular file is never replaced, even with `force`: a symbolic link
   (the write would land wherever it points), a directory, a device node, a FIFO, a socket.
4. A database or a private key is never replaced, even with `force`: a file that starts with the
   SQLite header or a SQLite WAL header, a PEM private key, or one of the `protect`ed paths (the
   collector's configured database and key, which a command names).
5. The write is atomic: the data goes to a temporary file in the same directory, is fsynced,
   then takes the name (a hard link when nothing may be replaced, so a file created meanwhile is
   not clobbered; a rename with `force`), and the directory is fsynced. A reader sees the old
   file or the whole new one, and a failure leaves nothing behind.
6. The file gets exactly `mode` (0600 for keys), whatever the umask.

`write_output` and `open_output` also take `-`: the data goes to standard output (never to a
terminal), every byte of it or a ConfigError.
`check_output` runs the same checks before a command starts its work, so a refusal costs
nothing and changes nothing.
Refusals raise ConfigError (the CLI's exit code 2) with a message that names the path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from flopwatch.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

STDOUT = "-"
SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
_PEM_PRIVATE_KEY = b"PRIVATE KEY-----"
_SNIFF_BYTES = 64
_FORCE_HINT = "pass --force to replace it"

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def is_stdout(target: str | Path) -> bool:
    return str(target) == STDOUT


def write_output(
    target: str | Path,
    data: bytes,
    *,
    force: bool = False,
    mode: int = 0o644,
    protect: Iterable[Path] = (),
) -> None:
    """Write `data` to the file `target` (see `write_file`), or to standard output for `-`."""
    if is_stdout(target):
        to_stdout(data)
    else:
        write_file(Path(target), data, force=force, mode=mode, protect=protect)


def check_output(target: str | Path, *, force: bool = False, protect: Iterable[Path] = ()) -> None:
    """Refuse now what `write_output` would refuse later, before a command does its work
    (`write_output` checks again when it writes)."""
    if is_stdout(target):
        _check_not_terminal()
        return
    path = Path(target)
    _check_directory(path, path.parent)
    existing = _lstat(path)
    if existing is not None:
        _check_replaceable(path, existing, protect)
        if not force:
            raise ConfigError(f"{path} already exists; {_FORCE_HINT}")


def _check_not_terminal() -> None:
    if sys.stdout.isatty():
        raise ConfigError(
            "not writing binary data to a terminal: redirect standard output (> FILE or | ...) "
            "or give a file name"
        )


def to_stdout(data: bytes) -> None:
    """Binary data to standard output, all of it, unless standard output is a terminal."""
    with _stdout() as out:
        out.write(data)


class _StdoutRaw(io.RawIOBase):
    """Standard output's descriptor, written in full: a pipe may take part of a write, and a
    reader that goes away is a ConfigError, not a traceback nor a silently short output."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._attempted = 0

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        view = memoryview(b).cast("B")
        size = len(view)
        self._attempted += size
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's last flush at exit does not fail a
            # second time, and say that not everything arrived.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._fd)
                os.close(devnull)
            raise ConfigError(
                f"standard output was closed before all {self._attempted} bytes were written"
            ) from None
        return size


@contextlib.contextmanager
def _stdout() -> Iterator[BinaryIO]:
    """Standard output as a binary file, unless it is a terminal; flushed at the end."""
    _check_not_terminal()
    out = sys.stdout
    out.flush()  # text printed before goes first
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # stdout replaced by an object without a descriptor
        yield out.buffer
        out.buffer.flush()
        return
    with io.BufferedWriter(_StdoutRaw(fd)) as f:
        yield f


@contextlib.contextmanager
def open_output(
    target: str | Path,
    *,
    force: bool = False,
    mode: int = 0o644,
    protect: Iterable[Path] = (),
    force_hint: str = _FORCE_HINT,
) -> Iterator[BinaryIO]:
    """A file to write `target`'s data into, in pieces, by the rules in the module docstring
    (`-`: standard output). The checks run before it is opened; the data goes to a temporary
    file beside `target`, which, when the block ends, is fsynced and takes the name, and the
    directory is fsynced. If the block raises, nothing is left behind and `target` is as it
    was. An OSError while writing is a ConfigError naming `target`.
    """
    if is_stdout(target):
        with _stdout() as out:
            yield out
        return
    path = Path(target)
    directory = path.parent
    _check_directory(path, directory)
    existing = _lstat(path)
    if existing is not None:
        _check_replaceable(path, existing, protect)
        if not force:
            raise ConfigError(f"{path} already exists; {force_hint}")
    tmp, f = _open_temporary(path, mode)
    try:
        try:
            with f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            _publish(tmp, path, replace=existing is not None, force_hint=force_hint)
            _fsync_directory(directory)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def write_file(
    path: Path,
    data: bytes,
    *,
    force: bool = False,
    mode: int = 0o644,
    protect: Iterable[Path] = (),
    force_hint: str = _FORCE_HINT,
) -> None:
    """Write `data` to `path` atomically, by the rules in the module docstring.

    `force_hint` ends the message when `path` exists and `force` is off (say how to replace it,
    or that it is never replaced).
    """
    with open_output(path, force=force, mode=mode, protect=protect, force_hint=force_hint) as f:
        f.write(data)


def _check_directory(path: Path, directory: Path) -> None:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(
            f"cannot write {path}: directory {directory} does not exist (create it first)"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {directory}: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cannot write {path}: {directory} is not a directory")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e


def _check_replaceable(path: Path, st: os.stat_result, protect: Iterable[Path]) -> None:
    """Refuse, even with force, to replace what is not a plain file, or a database or key."""
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise ConfigError(f"{path} is {kind}, not a regular file; not replacing it")
    for guarded in protect:
        try:
            same = os.path.samefile(path, guarded)
        except OSError:  # the protected file does not exist (yet)
            same = False
        if same:
            raise ConfigError(f"{path} is {guarded}, which this command reads; not replacing it")
    what = sniff(path)
    if what is not None:
        raise ConfigError(f"{path} already exists and holds {what}; flopwatch never replaces one")


def sniff(path: Path) -> str | None:
    """ "a SQLite database" (or its write-ahead log) or "a private key" if the file at `path`
    starts like one, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.read(fd, _SNIFF_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head.startswith(SQLITE_HEADER):
        return "a SQLite database"
    if head[:4] in _SQLITE_WAL_MAGICS:
        return "a SQLite write-ahead log"
    if head.startswith(b"-----BEGIN") and _PEM_PRIVATE_KEY in head.split(b"\n", 1)[0]:
        return "a private key"
    return None


def _open_temporary(path: Path, mode: int) -> tuple[Path, BinaryIO]:
    """A new file beside `path` with exactly `mode`, open for writing."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        return tmp, os.fdopen(fd, "wb")
    except OSError as e:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e


def _publish(tmp: Path, path: Path, *, replace: bool, force_hint: str) -> None:
    """Give the finished file its name: in place of the file there (`replace`, with force), or
    only if the name is still free."""
    if replace:
        os.replace(tmp, path)
    else:
        _link_new(tmp, path, force_hint)


def _link_new(tmp: Path, path: Path, force_hint: str) -> None:
    """Give the finished file its name only if the name is still free."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; {force_hint}") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A filesystem without hard links: the name was free a moment ago (checked above).
        if os.path.lexists(path):
            raise ConfigError(f"{path} already exists; {force_hint}") from None
        os.rename(tmp, path)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
