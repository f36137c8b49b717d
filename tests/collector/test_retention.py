"""Retention end to end (SQLite and PostgreSQL): archive the records of jobs that are over,
prune them, and everything a regulator or operator relies on still holds: totals, the log's
tree heads and consistency proofs, the chains, reports of jobs still open; a report of a pruned
job verifies offline when the archive is given, and says what is missing when it is not."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flopwatch.collector.archive_file import ArchiveReader
from flopwatch.collector.job_report import build_report
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.retention import (
    MIN_ARCHIVE_AGE_S,
    archive_records,
    parse_before,
    prune_records,
)
from flopwatch.collector.sampled_report import build_sampled_report
from flopwatch.collector.store.base import Store
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey
from flopwatch.merkle import verify_consistency
from flopwatch.verify import BundleVerifier
from tests.collector.retention_helpers import CUT, fill
from tests.nodes import T0, S


def archived(store: Store, log: TransparencyLog, before: int = CUT) -> bytes:
    out = io.BytesIO()
    archive_records(store, log, before, out)
    return out.getvalue()


def reader(data: bytes, log: TransparencyLog) -> ArchiveReader:
    return ArchiveReader(Path("mem"), io.BytesIO(data), collector_key_id=log.key_id)


def test_archive_prune_then_reports_totals_and_log_still_hold(store: Store) -> None:
    f = fill(store)
    key = SigningKey.generate()
    log = TransparencyLog(store, key)
    kept_head = log.sign()  # a regulator's tree head from before the prune
    totals = store.job_totals()
    data = archived(store, log)
    archive = reader(data, log)
    assert archive.header.entries == 3  # job 1's records; job 2 is still open
    assert [e.envelope for e in archive.entries()] == f.early_a
    result = prune_records(store, reader(data, log), CUT)
    assert (result.archived, result.pruned, result.kept) == (3, 3, 0)

    assert store.job_totals() == totals
    # Without the archive, the report says where the envelopes went and gives the totals.
    with pytest.raises(ConfigError, match=r"3 of the 3 envelopes .* archived and pruned") as e:
        build_report(store, log, "slurm:c/1")
    assert "sound upper bound" in str(e.value) and "--archive" in str(e.value)
    # A sampled report reads stored figures, but opens the records it draws: all are pruned.
    with pytest.raises(ConfigError, match=r"log leaf \d+ of job 'slurm:c/1', drawn by the") as e:
        build_sampled_report(store, log, "slurm:c/1", samples=1, probes=0)
    assert "--archive" in str(e.value)
    # With it, the bundle is whole and verifies offline, with the same totals.
    from_archive = {x.leaf_index: x.envelope for x in reader(data, log).entries()}
    bundle = build_report(
        store,
        log,
        "slurm:c/1",
        consistency_from=[kept_head],
        archived=lambda leaves: {i: from_archive[i] for i in leaves if i in from_archive},
    )
    report = BundleVerifier(collector_key_id=key.key_id, trusted_tree_head=kept_head).verify(
        bundle.to_bytes()
    )
    assert (report.flops_estimate, report.flops_upper) == (
        totals[0].flops_estimate,
        totals[0].flops_upper,
    )
    # A job still open keeps its envelopes and its report needs nothing else.
    open_job = build_report(store, log, "slurm:c/2")
    BundleVerifier(collector_key_id=key.key_id).verify(open_job.to_bytes())
    # The log grows on; its heads stay consistent with the one kept before the prune.
    f.clock[0] += 60 * S
    assert f.ingestor(store).ingest([f.a.envelope()])[0].status == "accepted"
    new = log.sign().head
    verify_consistency(
        old_size=kept_head.head.size,
        new_size=new.size,
        old_root=kept_head.head.root,
        new_root=new.root,
        proof=log.consistency_proof(kept_head.head.size, new.size),
    )


def test_an_archive_missing_envelopes_gives_no_report(store: Store) -> None:
    fill(store)
    log = TransparencyLog(store, SigningKey.generate())
    data = archived(store, log)
    prune_records(store, reader(data, log), CUT)
    entries = {x.leaf_index: x.envelope for x in reader(data, log).entries()}
    with pytest.raises(ConfigError, match="does not hold 1 of the 3 archived envelopes"):
        build_report(
            store, log, "slurm:c/1", archived=lambda leaves: {0: entries[0], 1: entries[1]}
        )
    with pytest.raises(ConfigError, match="is not the logged one"):
        build_report(store, log, "slurm:c/1", archived=lambda leaves: {**entries, 0: entries[1]})


def test_a_damaged_archive_prunes_nothing(store: Store) -> None:
    fill(store)
    log = TransparencyLog(store, SigningKey.generate())
    data = archived(store, log)
    damaged = bytearray(data)
    damaged[-40] ^= 1  # inside the last envelope
    with pytest.raises(ConfigError, match="entry 2"):
        prune_records(store, reader(bytes(damaged), log), CUT)
    # Nothing went: the records are judged and pruned a page at a time, after the page's proofs
    # (an earlier page of a larger archive, each entry proven, may have gone).
    evidence = store.job_evidence("slurm:c/1")
    assert evidence is not None and not any(e.archived for e in evidence.entries)
    for cut in (data[: len(data) - 10], data + b"\x00"):
        with pytest.raises(ConfigError, match=r"truncated|more than the 3 entries"):
            list(reader(cut, log).entries())
    other = TransparencyLog(store, SigningKey.generate())
    with pytest.raises(ConfigError, match="not by this collector's"):
        reader(data, other)
    with pytest.raises(ConfigError, match="earlier date"):
        prune_records(store, reader(data, log), CUT + S)


def test_before_must_lie_a_day_in_the_past() -> None:
    now = T0 + 100 * 86400 * S
    assert parse_before("2027-01-15", now) == 1_799_971_200 * S  # midnight UTC
    assert parse_before("2027-01-15T00:00:00Z", now) == parse_before("2027-01-15", now)
    recent = now - (MIN_ARCHIVE_AGE_S - 60) * S
    text = datetime.fromtimestamp(recent / 1e9, UTC).isoformat()
    with pytest.raises(ConfigError, match="at least 24 hours in the past"):
        parse_before(text, now)
    with pytest.raises(ConfigError, match="expected a date"):
        parse_before("last week", now)
