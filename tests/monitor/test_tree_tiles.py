"""Tiles authenticated against a checkpoint's root, the roots of older sizes recomputed from the
new tree's tiles, entry bundles checked against level-0 tiles: every tree shape up to three tile
levels, against the collector's own tiles."""

from __future__ import annotations

import pytest

from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.merkle import EMPTY_ROOT
from flopwatch.monitor.tree_tiles import (
    ENTRY_NOT_IN_TREE,
    HISTORY_REWRITTEN,
    TILES_DISAGREE,
    TreeTiles,
    tile_ref,
)
from flopwatch.tlog.tiles import TileRef, decode_bundle
from tests.collector.log.log_fakes import MemoryLog

LOG = MemoryLog()
LOG.grow_to(70_000)
TILES = TileLog(LOG, SigningKey.generate(), "o")  # type: ignore[arg-type]


def tree(size: int, fetch=None) -> TreeTiles:
    root = TILES.checkpoint(size)[0].root
    return TreeTiles(size, root, fetch or (lambda ref: TILES.read(ref, size)))


@pytest.mark.parametrize("size", [1, 5, 255, 256, 257, 512, 600, 65535, 65536, 65537, 70000])
def test_old_roots_and_bundles_check_out_for_every_shape(size: int) -> None:
    t = tree(size)
    for old in {0, 1, 3, 255, 256, 300, size // 2, size - 1, size}:
        if old <= size:
            t.check_consistent(old, TILES.checkpoint(old)[0].root)
    for index in {0, (size - 1) // 256}:
        ref = tile_ref(size, None, index)
        t.check_bundle(index, decode_bundle(TILES.read(ref, size), ref.width))


def test_the_root_check_reads_only_the_partial_tiles() -> None:
    seen: list[str] = []

    def fetch(ref: TileRef) -> bytes:
        seen.append(ref.path())
        return TILES.read(ref, 70_000)

    tree(70_000, fetch)
    assert sorted(seen) == ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"]


def test_tampering_is_told_apart() -> None:
    assert TreeTiles(0, EMPTY_ROOT, lambda ref: b"").root_of(0) == EMPTY_ROOT

    def tampered(ref: TileRef) -> bytes:
        data = TILES.read(ref, 600)
        return bytes(32) + data[32:] if ref.path() == "tile/0/000" else data

    entries = decode_bundle(TILES.read(TileRef(None, 0), 600), 256)
    t = tree(600, tampered)  # the root check passes: it reads only partial tiles
    t.check_consistent(300, TILES.checkpoint(300)[0].root)  # nor does this need tile 0/000
    for check in (lambda: t.check_bundle(0, entries), lambda: t.root_of(100)):
        with pytest.raises(VerificationError) as e:
            check()
        assert e.value.reason == TILES_DISAGREE
    t = tree(600)
    with pytest.raises(VerificationError) as e:
        t.check_consistent(300, bytes(32))
    assert e.value.reason == HISTORY_REWRITTEN
    with pytest.raises(VerificationError) as e:
        t.check_bundle(0, [*entries[:-1], b"other"])
    assert e.value.reason == ENTRY_NOT_IN_TREE
    with pytest.raises(VerificationError) as e:
        tree(600, lambda ref: bytes(len(TILES.read(ref, 600))))
    assert e.value.reason == TILES_DISAGREE
