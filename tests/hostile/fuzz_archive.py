"""Fuzz target: a records archive (`flopwatch records prune --archived`, `report --archive`),
read by `flopwatch.collector.archive_file.ArchiveReader`. Any input is refused with a
ConfigError naming the file, or read into entries that are each proven leaves of the
archive's tree head, signed by the expected collector key, in ascending order.

    .venv/bin/python tests/hostile/fuzz_archive.py -atheris_runs=100000 [CORPUS_DIR]

The seed is a real archive (`archive_records` over the retention tests' store, built once per
process); the pytest smoke is tests/hostile/test_fuzz_files.py (fuzz_common.smoke_inputs).
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.hostile.fuzz_common import fuzz_main, instrumented

with instrumented(__name__):
    from flopwatch.collector.archive_file import ArchiveReader
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.retention import archive_records
    from flopwatch.collector.store.sqlite.store import SQLiteStore
    from flopwatch.errors import ConfigError
    from flopwatch.keys import SigningKey
    from flopwatch.merkle import leaf_hash, verify_inclusion
    from tests.collector.retention_helpers import CUT, fill

NAME = Path("fuzzed.archive")


def _real_archive() -> tuple[bytes, str]:
    store = SQLiteStore(Path(tempfile.mkdtemp(prefix="flopwatch-fuzz-archive-")) / "c.db")
    try:
        fill(store)
        log = TransparencyLog(store, SigningKey.generate())
        out = io.BytesIO()
        archive_records(store, log, CUT, out)
        return out.getvalue(), log.key_id
    finally:
        store.close()


ARCHIVE, KEY_ID = _real_archive()
SEEDS = [ARCHIVE, ARCHIVE[: len(ARCHIVE) // 2], b""]
TOKENS = [
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x00\x00\x00\x01",
    b"\x7f\xff\xff\xff",
    b"\x08\x00",
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x12\x00",
    b"\x1a\x20" + bytes(32),
]


def test_one_input(data: bytes) -> None:
    try:
        reader = ArchiveReader(NAME, io.BytesIO(data), collector_key_id=KEY_ID)
        head = reader.header.tree_head.head
        assert head.log_id == KEY_ID
        previous = -1
        for entry in reader.entries():
            assert entry.leaf_index > previous
            previous = entry.leaf_index
            verify_inclusion(  # again, independently: the reader let only proven leaves out
                leaf_index=entry.leaf_index,
                tree_size=head.size,
                leaf_hash=leaf_hash(entry.envelope),
                proof=list(entry.proof),
                root=head.root,
            )
    except ConfigError as e:
        assert str(NAME) in str(e), e  # every refusal names the file


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS)
