"""`flopwatch records archive --out` follows the one rule for files (flopwatch.files): checked
before any work, never over an existing file without --force nor over anything but a regular
file, a database or a key even with it, never into a missing directory, written whole or not at
all; `-` streams it to standard output."""

from __future__ import annotations

import io
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from flopwatch.collector import retention
from flopwatch.collector.archive_file import ArchiveReader
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.cli.test_records_cmd import past_db

OLD = b"an older archive\n"


def archive(db: str, before: str, out: str | Path, *more: str) -> int:
    return main(["records", "archive", "--db", db, "--before", before, "--out", str(out), *more])


def tree_heads(db: str) -> int:
    """Tree heads the database holds: an archive run signs one, a refused run none."""
    with closing(sqlite3.connect(db.removeprefix("sqlite:"))) as c:
        return int(c.execute("SELECT count(*) FROM tree_heads").fetchone()[0])


def entries(db: str, data: bytes) -> list[int]:
    key = load_collector_key(default_key_path(db), create=False)
    reader = ArchiveReader(Path("x"), io.BytesIO(data), collector_key_id=key.key_id)
    return [e.leaf_index for e in reader.entries()]


@pytest.fixture
def past(tmp_path: Path) -> tuple[str, str]:
    return past_db(tmp_path)


def test_an_existing_archive_is_refused_before_any_work_and_replaced_with_force(
    past, tmp_path, capsys
):
    db, before = past
    out = tmp_path / "2025.archive"
    out.write_bytes(OLD)
    heads = tree_heads(db)

    assert archive(db, before, out) == 2
    assert "already exists; pass --force to replace it" in capsys.readouterr().err
    assert out.read_bytes() == OLD
    assert tree_heads(db) == heads  # refused before the tree head was signed

    assert archive(db, before, out, "--force") == 0
    assert "3 envelopes from 1 node key(s)" in capsys.readouterr().out
    assert len(entries(db, out.read_bytes())) == 3
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "fifo", "directory"])
def test_what_is_not_a_regular_file_is_never_replaced(past, tmp_path, capsys, kind):
    db, before = past
    out = tmp_path / "out.archive"
    target = tmp_path / "target"
    if kind == "symlink":
        target.write_bytes(OLD)
        out.symlink_to(target)
    elif kind == "dangling symlink":
        out.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    heads = tree_heads(db)
    assert archive(db, before, out, "--force") == 2
    assert "not a regular file; not replacing it" in capsys.readouterr().err
    assert tree_heads(db) == heads
    if kind == "symlink":
        assert out.is_symlink() and target.read_bytes() == OLD
    if kind == "dangling symlink":
        assert out.is_symlink() and not target.exists()


def test_the_database_its_wal_its_key_and_another_database_are_never_replaced(
    past, tmp_path, capsys
):
    db, before = past
    path = Path(db.removeprefix("sqlite:"))
    key = default_key_path(db)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as c:
        c.execute("CREATE TABLE t (x)")
        c.commit()
    for out, message in [
        (path, "which this command reads"),
        (tmp_path / "link-to-db", "which this command reads"),  # a hard link: the same file
        (key, "which this command reads"),
        (other, "holds a SQLite database"),
    ]:
        if out.name == "link-to-db":
            os.link(path, out)
        assert archive(db, before, out, "--force") == 2, out
        assert message in capsys.readouterr().err
    with closing(SQLiteStore(path)) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert len(store.job_totals()) == 2


def test_a_missing_directory_is_an_error_not_created(past, tmp_path, capsys):
    db, before = past
    assert archive(db, before, tmp_path / "no" / "such" / "x.archive") == 2
    assert "does not exist (create it first)" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_dash_streams_the_archive_to_standard_output(past, tmp_path, capfdbinary):
    db, before = past
    assert archive(db, before, "-") == 0
    captured = capfdbinary.readouterr()
    assert b"wrote the archive to standard output: 3 envelopes" in captured.err
    assert len(entries(db, captured.out)) == 3
    # The same records as a file would hold (the tree head differs: signed at each run).
    assert archive(db, before, tmp_path / "f.archive") == 0
    assert entries(db, (tmp_path / "f.archive").read_bytes()) == entries(db, captured.out)


def test_a_failure_while_archiving_leaves_nothing(past, tmp_path, capsys, monkeypatch):
    db, before = past
    real = retention.write_frame
    written = []

    def disk_full(out, data):
        if written:
            raise OSError(28, "No space left on device")
        written.append(data)
        real(out, data)

    monkeypatch.setattr(retention, "write_frame", disk_full)
    out = tmp_path / "x.archive"
    assert archive(db, before, out) == 2
    assert f"cannot write {out}: No space left on device" in capsys.readouterr().err
    assert list(tmp_path.glob("*.archive")) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
