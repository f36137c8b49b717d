"""Hostile records archives (`flopwatch records prune --archived FILE`, `report --archive`): an
archive comes from a file anyone could have swapped. Every attack below is refused with a clear
ConfigError before it costs more than its bounds, and nothing is pruned on its word.

  huge-declared-length   a frame says it is 4 GiB: refused from the 4-byte prefix, not read
  lying-entry-count      the header promises a billion entries, the file ends: refused at EOF
  swapped-envelope       an entry carries another leaf's envelope: its inclusion proof fails
  foreign-collector      signed by another collector key: refused at the header
  not-an-archive         a job bundle, random bytes, an empty file
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.collector.archive_file import (
    MAX_ARCHIVE_HEADER_BYTES,
    ArchiveHeader,
    ArchiveReader,
    entry_bytes,
    write_frame,
)
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.retention import archive_records, prune_records
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey
from flopwatch.verify.bundle_format import Entry
from tests.collector.retention_helpers import CUT, fill
from tests.hostile.hostile_helpers import HOSTILE
from tests.paths import TAMPER


@pytest.fixture
def setting(tmp_path: Path) -> tuple[SQLiteStore, TransparencyLog, bytes]:
    store = SQLiteStore(tmp_path / "c.db")
    fill(store)
    log = TransparencyLog(store, SigningKey.generate())
    out = io.BytesIO()
    archive_records(store, log, CUT, out)
    return store, log, out.getvalue()


def read_all(data: bytes, log: TransparencyLog) -> None:
    reader = ArchiveReader(Path("hostile"), io.BytesIO(data), collector_key_id=log.key_id)
    for _ in reader.entries():
        pass


def nothing_pruned(store: SQLiteStore) -> bool:
    evidence = store.job_evidence("slurm:c/1")
    return evidence is not None and not any(e.archived for e in evidence.entries)


def frames(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def test_huge_declared_length_is_refused_from_its_prefix(setting) -> None:
    _, log, data = setting
    with pytest.raises(ConfigError, match=f"limit {MAX_ARCHIVE_HEADER_BYTES}"):
        read_all(struct.pack(">I", 2**32 - 1) + b"x" * 16, log)
    header, *_ = frames(data)
    with pytest.raises(ConfigError, match="entry 0 of 4294967295 bytes"):
        read_all(struct.pack(">I", len(header)) + header + struct.pack(">I", 2**32 - 1), log)


def test_lying_entry_count_and_swapped_envelope(setting) -> None:
    store, log, data = setting
    header_bytes, *entries = frames(data)
    head = ArchiveReader(Path("a"), io.BytesIO(data), collector_key_id=log.key_id).header
    liar = io.BytesIO()
    write_frame(liar, ArchiveHeader(head.tree_head, head.nodes, head.before_ns, 10**9).to_bytes())
    for e in entries:
        write_frame(liar, e)
    with pytest.raises(ConfigError, match="ends after 3 of its 1000000000 entries"):
        read_all(liar.getvalue(), log)
    parsed = list(ArchiveReader(Path("a"), io.BytesIO(data), collector_key_id=log.key_id).entries())
    swapped = io.BytesIO()
    write_frame(swapped, header_bytes)
    first = parsed[0]
    write_frame(swapped, entry_bytes(Entry(first.leaf_index, parsed[1].envelope, first.proof)))
    for e in entries[1:]:
        write_frame(swapped, e)
    reader = ArchiveReader(Path("a"), io.BytesIO(swapped.getvalue()), collector_key_id=log.key_id)
    with pytest.raises(ConfigError, match="entry 0: computed root does not match"):
        prune_records(store, reader, CUT)
    assert nothing_pruned(store)


def test_foreign_collector_and_things_that_are_no_archive(setting) -> None:
    store, log, data = setting
    with pytest.raises(ConfigError, match="not by this collector's"):
        ArchiveReader(Path("a"), io.BytesIO(data), collector_key_id="00" * 32)
    for junk, why in (
        (b"", "is empty"),
        ((TAMPER / "valid.bundle").read_bytes(), "declares the header of"),
        (struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff", "bad header"),
    ):
        with pytest.raises(ConfigError, match=why):
            read_all(junk, log)
    assert nothing_pruned(store)


@settings(HOSTILE, max_examples=200)
@given(st.binary(max_size=4096))
def test_random_bytes_are_a_clear_error(data: bytes) -> None:
    log_id = "0" * 64
    with pytest.raises(ConfigError):
        reader = ArchiveReader(Path("r"), io.BytesIO(data), collector_key_id=log_id)
        for _ in reader.entries():
            pass
