"""The published checkpoint survives a restart: it is kept in the store (SQLite and PostgreSQL)
and served again at once, if it is this log's, matches the tree held and meets the witness
policy; the directory is brought up to it."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.tlog_service import TlogService
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.factory import open_store
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Note, open_note
from flopwatch.v1 import collector_pb2 as cpb
from tests.collector.collector_helpers import run
from tests.collector.log.log_fakes import MemoryLog
from tests.collector.log.witnessed import fetch, witnessed_log
from tests.collector.server_helpers import config, past_node, submit
from tests.nodes import NOW

KEY = SigningKey.generate()
ORIGIN = "collector.example/log"


def direct(fn, *args):  # the tests' "store thread" is the caller's
    return fn(*args)


# -- the store -----------------------------------------------------------------------------------
def test_the_published_checkpoint_is_kept_per_origin_and_never_shrinks(store_url):
    store = open_store(store_url, now_ns=lambda: NOW, create=True)
    assert store.published_checkpoint(ORIGIN) is None
    store.add_published_checkpoint(ORIGIN, 5, b"five")
    store.add_published_checkpoint(ORIGIN, 3, b"three")  # another collector, later: ignored
    assert store.published_checkpoint(ORIGIN) == b"five"
    store.add_published_checkpoint(ORIGIN, 5, b"five, more cosignatures")
    store.add_published_checkpoint("other.example/log", 1, b"one")
    store.close()
    again = open_store(store_url, now_ns=lambda: NOW)
    assert again.published_checkpoint(ORIGIN) == b"five, more cosignatures"
    assert again.published_checkpoint("other.example/log") == b"one"
    again.close()


# -- the service, over an in-memory log --------------------------------------------------------
def test_a_restarted_service_serves_the_kept_checkpoint_at_once_and_fills_the_directory(
    tmp_path: Path,
) -> None:
    log = MemoryLog()
    log.grow_to(600)
    tiles = tmp_path / "tiles"
    config = TlogConfig(tiles_dir=tiles)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    first = TlogService(config, tile_log, direct)
    assert first.checkpoint() is None
    assert first.publish()
    published = first.checkpoint()
    assert published is not None and log.published[ORIGIN] == (600, published)
    first.close()

    shutil.rmtree(tiles)  # a directory lost, or newly configured
    again = TlogService(config, TileLog(log, KEY, ORIGIN), direct)  # type: ignore[arg-type]
    assert again.checkpoint() == published  # before any new checkpoint
    assert not (tiles / "checkpoint").exists()
    assert not again.publish()  # the log did not grow: nothing new to publish ...
    assert (tiles / "checkpoint").read_bytes() == published  # ... but the directory caught up
    assert (tiles / "tile/entries/002.p/88").is_file()


def test_a_kept_checkpoint_that_is_not_this_logs_is_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = MemoryLog()
    log.grow_to(10)
    first = TlogService(TlogConfig(), TileLog(log, KEY, ORIGIN), direct)  # type: ignore[arg-type]
    assert first.publish()
    caplog.set_level(logging.WARNING)

    # Signed by another key under the same origin (the collector key was replaced).
    other = TlogService(TlogConfig(), TileLog(log, SigningKey.generate(), ORIGIN), direct)  # type: ignore[arg-type]
    assert other.checkpoint() is None
    assert "not this log's" in caplog.text

    # A store holding another tree than the checkpoint's (restored from an older backup).
    older = MemoryLog()
    older.grow_to(5)
    older.published = dict(log.published)
    shorter = TlogService(TlogConfig(), TileLog(older, KEY, ORIGIN), direct)  # type: ignore[arg-type]
    assert shorter.checkpoint() is None
    assert "does not match the log it holds (5 entries)" in caplog.text
    rewritten = MemoryLog()  # the same size, another root
    rewritten.add(*(f"rewritten {i}".encode() for i in range(10)))
    rewritten.published = dict(log.published)
    other_tree = TlogService(TlogConfig(), TileLog(rewritten, KEY, ORIGIN), direct)  # type: ignore[arg-type]
    assert other_tree.checkpoint() is None

    # Another origin configured: the kept checkpoint is not looked at.
    renamed = TlogService(TlogConfig(), TileLog(log, KEY, "elsewhere.example/log"), direct)  # type: ignore[arg-type]
    assert renamed.checkpoint() is None


def test_a_kept_checkpoint_short_of_the_witness_policy_is_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cosigned by W1 under a 1-of-1 policy, then the operator asks for W1 and W2: the kept
    checkpoint is not served (that would publish without the quorum)."""
    w1, w2 = (Cosigner(f"w{i}.example", SigningKey.generate().private_key) for i in (1, 2))
    log = MemoryLog()
    log.grow_to(10)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    checkpoint, note = tile_log.checkpoint()
    cosigned = Note(note.text, (*note.signatures, w1.cosign(checkpoint.body(), 1_700_000_000)))
    log.published[ORIGIN] = (10, cosigned.to_bytes())

    def service(policy_text: str) -> TlogService:
        policy = tmp_path / "policy"
        policy.write_text(policy_text)
        return TlogService(TlogConfig(witness_policy=policy), tile_log, direct)

    one = f"witness W1 {w1.verifier.vkey()} http://127.0.0.1:9/\nquorum W1\n"
    both = one.replace("quorum W1", f"witness W2 {w2.verifier.vkey()} http://127.0.0.1:9/\n")
    served = service(one)
    assert served.checkpoint() == cosigned.to_bytes()
    served.close()
    caplog.set_level(logging.WARNING)
    short = service(both + "group G all W1 W2\nquorum G\n")
    assert short.checkpoint() is None
    assert "lacks the cosignatures the witness policy asks for" in caplog.text
    short.close()


# -- a collector, witnessed, restarted (SQLite and PostgreSQL) ---------------------------------
def test_a_restarted_collector_serves_its_witnessed_checkpoint_before_any_new_one(
    store_url: str, tmp_path: Path
) -> None:
    witnessed = witnessed_log(tmp_path, ORIGIN)
    cfg = replace(
        config(tmp_path / "unused.db"),
        db=store_url,
        log_key=witnessed.key_path,
        tlog=witnessed.tlog,
    )
    node = past_node("node-a", gpus=2)
    store = open_store(store_url, create=True)
    store.enroll(node.public_raw, node.node_id)
    store.close()

    async def first_run() -> bytes:
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                acks = await submit(channel, node.envelopes(3))
            assert {a.status for a in acks} == {cpb.ACK_STATUS_ACCEPTED}
            assert service.tlog is not None
            assert await asyncio.to_thread(service.tlog.publish)
            data = service.tlog.checkpoint()
            assert data is not None
            return data
        finally:
            await service.stop()

    async def second_run() -> tuple[bytes, bool, int | None]:
        service = CollectorService(cfg)
        await service.start()
        try:
            assert service.tlog is not None and service.tlog.port is not None
            served = await asyncio.to_thread(fetch, service.tlog.port, "/checkpoint")
            published_again = await asyncio.to_thread(service.tlog.publish)
            witnessing = service.tlog._witnessing
            assert witnessing is not None
            return served, published_again, witnessing.clients[0].known_size
        finally:
            await service.stop()

    try:
        cosigned = run(first_run())
        witnessed.witness.close()  # the witness is away while the collector restarts
        served, published_again, known = run(second_run())
    finally:
        witnessed.close()
    assert served == cosigned
    # The node key's enrollment (logged at the first start) and the 3 records.
    assert open_checkpoint(served, [witnessed.log_verifier], origin=ORIGIN).checkpoint.size == 4
    assert [s.name for s in open_note(served, [witnessed.cosigner.verifier])[1]] == ["w.example"]
    assert not published_again  # nothing new; the witness was not needed
    assert known == 4  # the witness that cosigned size 4 is known to hold it
