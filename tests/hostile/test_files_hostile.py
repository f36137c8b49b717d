"""Careless and hostile file targets, through the command line: each test names what was tried.

Class "files" of issue 17: `flopwatch report --out PATH` used to replace whatever was at PATH
(a file, a symlink's target, a device, the collector's live database) and create missing
directories; `nodes list` with a mistyped --db made a new empty database; two collectors could
serve one SQLite file. Every command now writes through `flopwatch.files`, opens a database it
does not own with SQLite's mode=rw, and a collector holds its SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config
from tests.nodes import NOW, Node

OLD = b"precious\n"


@pytest.fixture
def node() -> Node:
    return Node("gpu-1")


@pytest.fixture
def db(tmp_path: Path, node: Node) -> Path:
    """A collector database holding three records of `node`'s job, and its collector key."""
    path = tmp_path / "collector.db"
    store = SQLiteStore(path, now_ns=lambda: NOW)
    store.enroll(node.public_raw, node.node_id)
    acks = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: NOW).ingest(
        node.envelopes(3)
    )
    assert {a.status for a in acks} == {"accepted"}
    store.close()
    load_collector_key(default_key_path(f"sqlite:{path}"), create=True)
    return path


def report(node: Node, db: Path, out: str | Path, *extra: str) -> int:
    return main(["report", node.job, "--db", f"sqlite:{db}", "--out", str(out), *extra])


def verify(bundle: Path, db: Path) -> int:
    key = load_collector_key(default_key_path(f"sqlite:{db}"), create=False)
    return main(["verify", str(bundle), "--collector-key", key.key_id])


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry of `directory` and what it holds (a link: where it points)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(directory.iterdir()):
        if p.is_symlink():
            out[p.name] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[p.name] = p.read_bytes()
        else:
            out[p.name] = "(not a file)"
    return out


# -- report --out --------------------------------------------------------------------------


def test_report_over_an_existing_file_needs_force(tmp_path, node, db, capsys):
    out = tmp_path / "job.bundle"
    out.write_bytes(OLD)
    assert report(node, db, out) == 2
    assert f"{out} already exists; pass --force to replace it" in capsys.readouterr().err
    assert out.read_bytes() == OLD
    assert report(node, db, out, "--force") == 0
    assert out.read_bytes() != OLD
    assert verify(out, db) == 0


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_report_never_writes_through_a_symlink(tmp_path, node, db, capsys, force):
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    link = tmp_path / "job.bundle"
    link.symlink_to(victim)
    assert report(node, db, link, *force) == 2
    assert "is a symbolic link, not a regular file; not replacing it" in capsys.readouterr().err
    assert victim.read_bytes() == OLD and link.is_symlink()


def test_report_never_replaces_a_fifo_or_a_device(tmp_path, node, db, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "a FIFO"), ("/dev/null", "a character device")):
        assert report(node, db, target, "--force") == 2
        assert f"is {kind}, not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo()


def test_report_never_writes_over_the_live_database_or_its_key(tmp_path, node, db, capsys):
    before = snapshot(tmp_path)
    key = default_key_path(f"sqlite:{db}")

    async def attempts() -> list[tuple[int, str]]:
        service = CollectorService(config(db))  # the database is live: a collector serves it
        await service.start()
        try:
            results = []
            for target in (db, key, Path(f"{db}-wal")):
                code = await asyncio.to_thread(report, node, db, target, "--force")
                results.append((code, capsys.readouterr().err))
            return results
        finally:
            await service.stop()

    results = run(attempts())
    assert [code for code, _ in results] == [2, 2, 2]
    for _, err in results:
        assert "which this command reads; not replacing it" in err
    assert snapshot(tmp_path)[key.name] == before[key.name]
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (3,)


def test_report_never_writes_over_another_database(tmp_path, node, db, capsys):
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = other.read_bytes()
    assert report(node, db, other, "--force") == 2
    assert "already exists and holds a SQLite database" in capsys.readouterr().err
    assert other.read_bytes() == before


def test_report_never_creates_missing_directories(tmp_path, node, db, capsys):
    out = tmp_path / "no" / "such" / "job.bundle"
    assert report(node, db, out) == 2
    assert f"directory {out.parent} does not exist (create it first)" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_a_refused_report_changes_nothing(tmp_path, node, db, capsys):
    """The target is checked before the report signs anything into the database."""
    (tmp_path / "job.bundle").write_bytes(OLD)
    before = snapshot(tmp_path)
    assert report(node, db, tmp_path / "job.bundle") == 2
    assert snapshot(tmp_path) == before


def test_report_to_standard_output(tmp_path, node, db, capfdbinary):
    assert report(node, db, "-") == 0
    captured = capfdbinary.readouterr()
    assert b"wrote the bundle (" in captured.err and b"wrote" not in captured.out
    bundle = tmp_path / "from-stdout.bundle"
    bundle.write_bytes(captured.out)
    assert verify(bundle, db) == 0
    assert not (tmp_path / "-").exists()


# -- log tree-head --out -------------------------------------------------------------------


def test_tree_head_out_follows_the_same_rules(tmp_path, node, db, capfdbinary):
    bundle = tmp_path / "job.bundle"
    assert report(node, db, bundle) == 0
    kept = tmp_path / "kept.th"
    kept.write_bytes(OLD)
    tree_head = ["log", "tree-head", "--bundle", str(bundle), "--out"]
    capfdbinary.readouterr()
    assert main([*tree_head, str(kept)]) == 2
    assert b"already exists; pass --force" in capfdbinary.readouterr().err
    assert main([*tree_head, str(bundle), "--force"]) == 2  # its own input
    assert b"which this command reads" in capfdbinary.readouterr().err
    assert main([*tree_head, str(kept), "--force"]) == 0
    assert kept.read_bytes() != OLD
    capfdbinary.readouterr()
    assert main([*tree_head, "-"]) == 0
    assert capfdbinary.readouterr().out == kept.read_bytes()
    # A report never writes over the tree head it was asked to prove the log grew from.
    before = kept.read_bytes()
    assert report(node, db, kept, "--kept-tree-head", str(kept), "--force") == 2
    assert b"which this command reads" in capfdbinary.readouterr().err
    assert kept.read_bytes() == before


# -- databases: never created by a command that does not own them, one collector per file -----


@pytest.mark.parametrize(
    "argv",
    [
        ["nodes", "list"],
        ["nodes", "token", "--node", "gpu-1"],
        ["nodes", "revoke", "0123456789abcdef"],
        ["report", "slurm:c/1", "--key", "k.pem", "--out", "x.bundle"],
    ],
    ids=["nodes-list", "nodes-token", "nodes-revoke", "report"],
)
def test_a_mistyped_database_is_no_such_database(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    SigningKey.generate().save(Path("k.pem"))  # report loads its key before the database
    assert main([*argv, "--db", "sqlite:colector.db"]) == 2
    assert "no such database colector.db" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # nothing created


def test_an_empty_file_is_not_taken_for_a_database(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(["nodes", "list", "--db", f"sqlite:{empty}"]) == 3
    assert "is not a flopwatch database" in capsys.readouterr().err
    assert empty.read_bytes() == b""


def test_a_second_collector_on_one_sqlite_file_refuses_and_commands_still_work(db, capsys):
    argv = ["collector", "--db", f"sqlite:{db}", "--listen", "127.0.0.1:0", "--insecure"]
    argv += ["--metrics-listen", "off"]
    first = subprocess.Popen(
        [sys.executable, "-m", "flopwatch", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert first.stderr is not None
    try:
        for line in first.stderr:  # wait until the first collector serves
            if b"collector serving gRPC" in line:
                break
        else:
            pytest.fail(f"the first collector ended: {first.wait()}")
        second = subprocess.run(
            [sys.executable, "-m", "flopwatch", *argv], capture_output=True, timeout=60, check=False
        )
        err = second.stderr.decode()
        assert second.returncode == 2, err
        assert f"database {db} is in use by pid {first.pid}" in err
        assert "another collector serves it" in err
        # Commands that read or enroll still work while it runs.
        assert main(["nodes", "list", "--db", f"sqlite:{db}"]) == 0
        assert main(["nodes", "token", "--node", "gpu-9", "--db", f"sqlite:{db}"]) == 0
        assert first.poll() is None
        first.terminate()
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.wait(timeout=60)
        first.stderr.close()
    # Once it is gone, a collector may start on the file again (the lock file stays behind).
    assert Path(f"{db}-collector.lock").exists()
    SQLiteStore(db, exclusive=True).close()
