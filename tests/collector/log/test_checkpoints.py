"""The collector's log as checkpoints and tiles: the same RFC 6962 tree as its tree heads, tiles
that hash up to the checkpoint's root, and entries that are the stored envelopes."""

from __future__ import annotations

import pytest

from flopwatch import merkle
from flopwatch.collector.log.checkpoints import TileLog, default_origin, fits
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.errors import LogRangeError, VerificationError
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.tiles import TileRef, decode_bundle, decode_tile, new_tiles
from tests.collector.collector_helpers import statuses
from tests.collector.log.log_fakes import MemoryLog
from tests.nodes import Node

KEY = SigningKey.generate()
ORIGIN = "collector.example/log"


def test_a_tree_head_from_before_and_a_checkpoint_after_are_consistent(store, make_ingestor):
    """An existing log keeps verifying: an old SignedTreeHead and a new checkpoint are checked
    against each other with an ordinary consistency proof, and agree at the same size."""
    nodes = [Node("a"), Node("b", job="other")]
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)
    ingest = make_ingestor(store)
    assert (
        statuses(ingest.ingest([n.envelope() for n in nodes for _ in range(3)])) == ["accepted"] * 6
    )
    head = TransparencyLog(store, KEY).sign().head  # the old format, signed before
    assert (
        statuses(ingest.ingest([n.envelope() for n in nodes for _ in range(5)]))
        == ["accepted"] * 10
    )
    tile_log = TileLog(store, KEY, ORIGIN)
    checkpoint, note = tile_log.checkpoint()
    assert (head.size, checkpoint.size) == (6, 16)
    merkle.verify_consistency(
        old_size=head.size,
        new_size=checkpoint.size,
        old_root=head.root,
        new_root=checkpoint.root,
        proof=tile_log.consistency_proof(head.size, checkpoint.size),
    )
    assert tile_log.checkpoint(head.size)[0].root == head.root
    # The checkpoint verifies under the collector key, named after the origin.
    opened = open_checkpoint(note.to_bytes(), [tile_log.signer.verifier], origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    # Entries are the stored envelopes: each hashes to its level-0 tile hash.
    bundle = decode_bundle(tile_log.read(TileRef(None, 0, 16), 16), 16)
    tile = decode_tile(tile_log.read(TileRef(0, 0, 16), 16), 16)
    assert [merkle.leaf_hash(e) for e in bundle] == tile
    assert merkle.root_hash(tile) == checkpoint.root


def test_tiles_hash_up_to_the_root_at_every_level():
    log = MemoryLog()
    log.grow_to(256 * 256 + 300)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    size = log.log_size()
    checkpoint, _ = tile_log.checkpoint()
    tiles = {ref: tile_log.read(ref, size) for ref in new_tiles(0, size)}
    level0 = [
        h for ref, data in tiles.items() if ref.level == 0 for h in decode_tile(data, ref.width)
    ]
    assert level0 == [merkle.leaf_hash(e) for e in log.leaves]
    # A level-1 hash is the MTH of a full level-0 tile.
    level1 = decode_tile(tiles[TileRef(1, 0)], 256)
    assert level1[3] == merkle.root_hash(decode_tile(tiles[TileRef(0, 3)], 256))
    assert decode_tile(tiles[TileRef(2, 0, 1)], 1) == [merkle.root_hash(level1)]
    assert merkle.root_hash(level0) == checkpoint.root
    entries = [e for ref, d in tiles.items() if ref.is_entries for e in decode_bundle(d, ref.width)]
    assert entries == log.leaves


def test_only_tiles_the_tree_holds_are_read():
    log = MemoryLog()
    log.grow_to(300)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    assert fits(TileRef(0, 1, 44), 300) and not fits(TileRef(0, 1, 45), 300)
    assert fits(TileRef(0, 1, 10), 300)  # an older partial tile is a prefix: still served
    for ref, size in [(TileRef(0, 1), 300), (TileRef(1, 0, 2), 300), (TileRef(0, 0), 301)]:
        with pytest.raises(LogRangeError):
            tile_log.read(ref, size)


def test_an_entry_over_64_kib_makes_its_bundle_unservable():
    log = MemoryLog()
    log.add(b"small", b"x" * 70_000)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as e:
        tile_log.read(TileRef(None, 0, 2), 2)
    assert e.value.reason == "entry_too_large"
    assert decode_tile(tile_log.read(TileRef(0, 0, 2), 2), 2)[1] == merkle.leaf_hash(b"x" * 70_000)


def test_the_default_origin_names_the_key():
    assert default_origin(KEY) == f"flopwatch.invalid/log-{KEY.key_id[:16]}"
