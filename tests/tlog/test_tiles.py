"""Tile paths, the tiles of a tree (the spec's examples), and tile and bundle encoding."""

from __future__ import annotations

import pytest

from flopwatch.errors import VerificationError
from flopwatch.tlog.tiles import (
    MAX_ENTRY_BYTES,
    TileRef,
    decode_bundle,
    decode_tile,
    encode_bundle,
    encode_tile,
    index_path,
    level_tiles,
    new_tiles,
    parse_tile_path,
)


def test_index_paths_follow_the_spec_example():
    assert index_path(1234067) == "x001/x234/067"
    assert index_path(0) == "000"
    assert index_path(999) == "999"
    assert index_path(1000) == "x001/000"


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        (TileRef(0, 1234067), "tile/0/x001/x234/067"),
        (TileRef(2, 5, 17), "tile/2/005.p/17"),
        (TileRef(None, 3), "tile/entries/003"),
        (TileRef(None, 0, 1), "tile/entries/000.p/1"),
        (TileRef(63, 0, 255), "tile/63/000.p/255"),
    ],
)
def test_paths_round_trip(ref, path):
    assert ref.path() == path
    assert parse_tile_path(path) == ref


@pytest.mark.parametrize(
    "path",
    [
        "tile/64/000",  # level above 63
        "tile/01/000",  # leading zero in the level
        "tile/0/00",  # two-digit element
        "tile/0/001/002",  # a non-last element without x
        "tile/0/x001",  # the last element with x
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/007",
        "tile/0/000.p/",
        "tile/entries/abc",
        "tile/0/-01",
        "tile/0",
        "tiles/0/000",
        "tile/0/000/",
        "tile/0/x001/x002/" + "x000/" * 60 + "000",
    ],
)
def test_bad_paths_are_refused(path):
    with pytest.raises(VerificationError) as e:
        parse_tile_path(path)
    assert e.value.reason == "bad_tile_path"


def all_tiles(size: int) -> list[TileRef]:
    return new_tiles(0, size)


def test_a_tree_of_70000_has_the_tiles_the_spec_lists():
    tiles = [t for t in all_tiles(70_000) if not t.is_entries]
    level0 = [t for t in tiles if t.level == 0]
    assert len([t for t in level0 if t.full]) == 273
    assert [t.width for t in level0 if not t.full] == [112]
    assert [(t.index, t.width) for t in tiles if t.level == 1] == [(0, 256), (1, 17)]
    assert [(t.index, t.width) for t in tiles if t.level == 2] == [(0, 1)]
    entries = [t for t in all_tiles(70_000) if t.is_entries]
    assert [(t.index, t.width) for t in entries[-2:]] == [(272, 256), (273, 112)]


def test_a_tree_of_256_has_a_full_tile_and_a_partial_one_above():
    assert [(t.level, t.index, t.width) for t in all_tiles(256)] == [
        (None, 0, 256),
        (0, 0, 256),
        (1, 0, 1),
    ]
    assert all_tiles(0) == []


def test_new_tiles_are_those_the_old_tree_lacked():
    for old, new in [(0, 1), (1, 2), (255, 256), (256, 257), (300, 70_000), (65_536, 65_536)]:
        before = set(all_tiles(old))
        after = set(all_tiles(new))
        grown = {t for t in after - before}
        assert set(new_tiles(old, new)) == grown, (old, new)
    assert level_tiles(10, 10, 0) == []
    with pytest.raises(ValueError):
        new_tiles(5, 4)


def test_new_tiles_cost_does_not_grow_with_the_tree():
    # 10^12 is a multiple of 256: one more leaf starts a partial entry bundle and level-0 tile.
    assert [(t.level, t.width) for t in new_tiles(10**12, 10**12 + 1)] == [(None, 1), (0, 1)]
    # 2^40 completes a tile at every level up to 4 and starts level 5.
    got = [(t.level, t.width) for t in new_tiles(2**40 - 1, 2**40)]
    assert got == [(None, 256), (0, 256), (1, 256), (2, 256), (3, 256), (4, 256), (5, 1)]


def test_tiles_and_bundles_round_trip_and_refuse_bad_sizes():
    hashes = [bytes([i]) * 32 for i in range(3)]
    assert decode_tile(encode_tile(hashes), 3) == hashes
    with pytest.raises(VerificationError):
        decode_tile(encode_tile(hashes), 2)
    entries = [b"", b"a", b"x" * MAX_ENTRY_BYTES]
    data = encode_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert decode_bundle(data, 3) == entries
    for bad, width in [(data, 2), (data, 4), (data[:-1], 3), (data + b"\x00", 3)]:
        with pytest.raises(VerificationError) as e:
            decode_bundle(bad, width)
        assert e.value.reason == "malformed_entry_bundle"


def test_an_entry_over_64_kib_cannot_be_encoded():
    with pytest.raises(VerificationError) as e:
        encode_bundle([b"x" * (MAX_ENTRY_BYTES + 1)])
    assert e.value.reason == "entry_too_large"
