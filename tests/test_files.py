"""flopwatch.files: the one way commands write files (see its docstring for the rules)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from flopwatch import files
from flopwatch.errors import ConfigError
from flopwatch.files import check_output, write_file, write_output
from flopwatch.keys import SigningKey

DATA = b"new contents\n"
OLD = b"old contents\n"


def leftovers(directory: Path) -> list[str]:
    """Temporary files a write left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_gets_the_data_and_exactly_the_mode(tmp_path):
    os.umask(0o077)  # the mode must not depend on the umask
    try:
        write_file(tmp_path / "a", DATA, mode=0o644)
        write_file(tmp_path / "k", DATA, mode=0o600)
    finally:
        os.umask(0o022)
    assert (tmp_path / "a").read_bytes() == DATA
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_an_existing_file_is_replaced_only_with_force(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(OLD)
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        write_file(path, DATA)
    assert path.read_bytes() == OLD
    write_file(path, DATA, force=True)
    assert path.read_bytes() == DATA
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_is_never_replaced_nor_followed(tmp_path, dangling):
    target = tmp_path / "target"
    if not dangling:
        target.write_bytes(OLD)
    link = tmp_path / "link"
    link.symlink_to(target)
    for force in (False, True):
        with pytest.raises(ConfigError, match="is a symbolic link, not a regular file"):
            write_file(link, DATA, force=force)
    assert link.is_symlink()
    assert (target.read_bytes() == OLD) if not dangling else not target.exists()


def test_a_fifo_a_device_and_a_directory_are_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it to write would block: the write must not try
    (tmp_path / "dir").mkdir()
    cases = [
        (fifo, "a FIFO"),
        (Path("/dev/null"), "a character device"),
        (tmp_path / "dir", "a directory"),
    ]
    for path, kind in cases:
        with pytest.raises(ConfigError, match=f"is {kind}, not a regular file"):
            write_file(path, DATA, force=True)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_a_sqlite_database_and_its_wal_are_never_replaced(tmp_path):
    db = tmp_path / "some.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        # The WAL file exists while this connection holds the database open.
        wal = tmp_path / "some.db-wal"
        assert wal.stat().st_size > 0
        before = db.read_bytes(), wal.read_bytes()
        for path, what in ((db, "a SQLite database"), (wal, "a SQLite write-ahead log")):
            with pytest.raises(ConfigError, match=f"already exists and holds {what}"):
                write_file(path, DATA, force=True)
        assert (db.read_bytes(), wal.read_bytes()) == before


def test_a_private_key_is_never_replaced(tmp_path):
    key = tmp_path / "node.key"
    SigningKey.generate().save(key)
    before = key.read_bytes()
    with pytest.raises(ConfigError, match="holds a private key"):
        write_file(key, DATA, force=True)
    assert key.read_bytes() == before


def test_a_protected_path_is_never_replaced_under_any_name(tmp_path):
    guarded = tmp_path / "input.bin"
    guarded.write_bytes(OLD)
    other_name = tmp_path / "hardlink"
    os.link(guarded, other_name)
    for path in (guarded, other_name):
        with pytest.raises(ConfigError, match="which this command reads"):
            write_file(path, DATA, force=True, protect=[guarded])
    assert guarded.read_bytes() == OLD


def test_a_missing_directory_is_an_error_not_created(tmp_path):
    with pytest.raises(ConfigError, match=r"directory .*/no/such does not exist \(create it"):
        write_file(tmp_path / "no" / "such" / "out", DATA)
    assert not (tmp_path / "no").exists()
    (tmp_path / "plain").write_bytes(OLD)
    with pytest.raises(ConfigError, match="plain is not a directory"):
        write_file(tmp_path / "plain" / "out", DATA)


def test_check_output_refuses_what_the_write_would(tmp_path):
    (tmp_path / "exists").write_bytes(OLD)
    (tmp_path / "link").symlink_to(tmp_path / "exists")
    with pytest.raises(ConfigError, match="already exists"):
        check_output(tmp_path / "exists")
    check_output(tmp_path / "exists", force=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_output(tmp_path / "link", force=True)
    with pytest.raises(ConfigError, match="does not exist"):
        check_output(tmp_path / "missing" / "out")
    check_output(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out"
    path.write_bytes(OLD)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_file(path, DATA, force=True)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_file(tmp_path / "new", DATA)
    assert path.read_bytes() == OLD
    assert not (tmp_path / "new").exists()
    assert leftovers(tmp_path) == []


def test_a_file_created_during_the_write_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "out"
    publish = files._publish

    def racing(tmp: Path, target: Path, **kw: object) -> None:
        target.write_bytes(OLD)  # someone else creates the file after the checks
        publish(tmp, target, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "_publish", racing)
    with pytest.raises(ConfigError, match="already exists"):
        write_file(path, DATA)
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


def test_dash_writes_to_standard_output(capfdbinary):
    write_output("-", DATA)
    assert capfdbinary.readouterr().out == DATA


def test_dash_refuses_a_terminal(monkeypatch, capfdbinary):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with pytest.raises(ConfigError, match="not writing binary data to a terminal"):
        write_output("-", DATA)
    with pytest.raises(ConfigError, match="terminal"):
        check_output("-")
    assert capfdbinary.readouterr().out == b""


def stderr_when_the_reader_goes_away(write: str) -> str:
    """Run `write` (Python lines writing to "-") in a child whose reader takes one byte and
    closes the pipe; check the child exits 2 with no traceback, and return its stderr."""
    program = (
        "import sys\n"
        "from flopwatch.errors import ConfigError\n"
        "from flopwatch.files import open_output, write_output\n"
        "try:\n" + textwrap.indent(write, "    ") + "except ConfigError as e:\n"
        "    print(e, file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1) == b"x"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 2
    assert "Traceback" not in err
    return err


def test_a_reader_that_goes_away_is_a_message_not_a_traceback():
    # 8 MiB into a pipe whose reader takes one byte and closes it.
    err = stderr_when_the_reader_goes_away("write_output('-', b'x' * (8 << 20))\n")
    assert "standard output was closed before all 8388608 bytes were written" in err


def test_open_output_writes_in_pieces_in_bounded_memory(tmp_path):
    """The streaming writer (records archive): 32 MiB in 1 MiB pieces; Python memory stays
    near one piece, the file is whole, and it takes its name only at the end."""
    path = tmp_path / "big"
    piece = b"x" * (1 << 20)
    tracemalloc.start()
    try:
        with files.open_output(path) as f:
            for _ in range(32):
                f.write(piece)
                assert not path.exists()  # not under its name before it is whole
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == 32 << 20
    assert peak < 4 << 20
    assert leftovers(tmp_path) == []


def test_open_output_leaves_nothing_when_the_block_fails(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(OLD)
    with (
        pytest.raises(RuntimeError, match="the producer failed"),
        files.open_output(path, force=True) as f,
    ):
        f.write(DATA)
        raise RuntimeError("the producer failed")
    with pytest.raises(ConfigError, match="already exists"), files.open_output(path):
        pass
    assert path.read_bytes() == OLD
    assert leftovers(tmp_path) == []


def test_open_output_dash_streams_to_standard_output(capfdbinary):
    with files.open_output("-") as f:
        for i in range(3):
            f.write(b"piece %d\n" % i)
    assert capfdbinary.readouterr().out == b"piece 0\npiece 1\npiece 2\n"


def test_a_reader_that_goes_away_mid_stream_is_a_message_not_a_traceback():
    err = stderr_when_the_reader_goes_away(
        "with open_output('-') as f:\n    for _ in range(64):\n        f.write(b'x' * (1 << 20))\n"
    )
    assert "standard output was closed before all" in err and "bytes were written" in err
