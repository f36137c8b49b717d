"""`flopwatch records archive|prune` and `report --archive` through the command line, on a SQLite
database whose records lie in the real past (the cut-off must be a day old at least)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.store.records import JobTotal
from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.nodes import Node, S

DAY = 86400 * S


def past_db(tmp_path: Path) -> tuple[str, str]:
    """Job slurm:c/1 ran ten days ago; job slurm:c/2 then too, and an hour ago again."""
    now = time.time_ns() // S * S
    db = tmp_path / "collector.db"
    clock = [now - 10 * DAY + 3600 * S]
    store = SQLiteStore(db, now_ns=lambda: clock[0])
    a = Node("node-a", job="slurm:c/1", start_ns=now - 10 * DAY)
    b = Node("node-b", job="slurm:c/2", start_ns=now - 10 * DAY)
    for n in (a, b):
        store.enroll(n.public_raw, n.node_id)
    ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: clock[0])
    assert {x.status for x in ingestor.ingest([*a.envelopes(3), b.envelope()])} == {"accepted"}
    clock[0] = now - 3000 * S
    assert ingestor.ingest([b.envelope(start_ns=now - 3600 * S)])[0].status == "accepted"
    store.close()
    load_collector_key(default_key_path(f"sqlite:{db}"), create=True)
    before = time.strftime("%Y-%m-%d", time.gmtime(now / S - 5 * 86400))
    return f"sqlite:{db}", before


def totals_in(db: str) -> list[JobTotal]:
    store = SQLiteStore(Path(db.removeprefix("sqlite:")))
    try:
        return store.job_totals()
    finally:
        store.close()


def test_archive_prune_and_report_from_the_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, before = past_db(tmp_path)
    archive = tmp_path / "old.archive"
    assert main(["records", "archive", "--db", db, "--before", before, "--out", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "3 envelopes from 1 node key(s)" in out and "flopwatch records prune" in out
    assert oct(archive.stat().st_mode & 0o777) == "0o644"
    # never over an existing file without --force
    assert main(["records", "archive", "--db", db, "--before", before, "--out", str(archive)]) == 2
    assert "already exists; pass --force to replace it" in capsys.readouterr().err

    totals = totals_in(db)
    prune = ["records", "prune", "--db", db, "--before", before, "--archived", str(archive)]
    assert main(prune) == 0
    assert "pruned 3 of the 3 envelopes" in capsys.readouterr().out
    assert totals_in(db) == totals and len(totals) == 2  # totals stay

    bundle = tmp_path / "job1.bundle"
    assert main(["report", "slurm:c/1", "--db", db, "--out", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "were archived and pruned" in err and "--archive" in err
    report = ["report", "slurm:c/1", "--db", db, "--out", str(bundle), "--archive", str(archive)]
    assert main(report) == 0
    key = load_collector_key(default_key_path(db), create=False).key_id
    capsys.readouterr()
    assert main(["verify", str(bundle), "--collector-key", key]) == 0
    assert "VERIFIED: job 'slurm:c/1'" in capsys.readouterr().out
    # The open job's report needs no archive.
    assert main(["report", "slurm:c/2", "--db", db, "--out", str(tmp_path / "j2.bundle")]) == 0


def test_a_recent_cut_off_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = past_db(tmp_path)
    today = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = str(tmp_path / "x.archive")
    assert main(["records", "archive", "--db", db, "--before", today, "--out", out]) == 2
    assert "at least 24 hours in the past" in capsys.readouterr().err
    assert not Path(out).exists()
