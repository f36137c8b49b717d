"""Writing the files that commands produce: one place, one set of rules.

Every command that writes a file (`flopwatch report --out`, `log tree-head --out`, `certs`, the
node and collector keys) goes through `write_file` or `write_output`:

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

`write_output` also takes `-`: the data goes to standard output (never to a terminal).
`check_output` runs the same checks before a command starts its work, so a refusal costs
nothing and changes nothing.
Refusals raise ConfigError (the CLI's exit code 2) with a message that names the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from flopwatch.errors import ConfigError

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
    _check_not_terminal()
    out = sys.stdout
    try:
        out.flush()  # text printed before goes first
        try:
            fd = out.fileno()
        except (OSError, ValueError):  # stdout replaced by an object without a descriptor
            out.buffer.write(data)
            out.buffer.flush()
            return
        view = memoryview(data)
        while view:  # a pipe may take part of a write
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        # The reader went away. Point stdout at /dev/null so the interpreter's last flush at
        # exit does not fail a second time, and say that not everything arrived.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
        raise ConfigError(
            f"standard output was closed before all {len(data)} bytes were written"
        ) from None


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
    directory = path.parent
    _check_directory(path, directory)
    existing = _lstat(path)
    if existing is not None:
        _check_replaceable(path, existing, protect)
        if not force:
            raise ConfigError(f"{path} already exists; {force_hint}")
    tmp = _write_temporary(path, data, mode)
    try:
        if existing is None:
            _link_new(tmp, path, force_hint)
        else:
            os.replace(tmp, path)
        _fsync_directory(directory)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


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


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    """The data, durably, in a new file beside `path` with exactly `mode`."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    return tmp


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
