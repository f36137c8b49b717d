"""The log never holds an entry a tile cannot carry (65,535 bytes): the collector refuses larger
envelopes ("oversized", the limit named) unless an operator without tiles raised the limit for
records older agents spooled; a log that holds such an entry from before still publishes."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.tlog_service import TlogService
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey
from flopwatch.model import Precision
from flopwatch.tlog.tiles import MAX_ENTRY_BYTES, new_tiles
from flopwatch.v1 import collector_pb2 as cpb
from tests.collector.collector_helpers import run
from tests.collector.log.log_fakes import MemoryLog
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.nodes import NOW, PID, Node, S

KEY = SigningKey.generate()


def old_agent_record(node: Node) -> bytes:
    """What an agent of an earlier version signed for 8 GPUs x 100 rounds: one ~93 KB record."""
    builder = RecordBuilder(
        node_id=node.node_id,
        cluster="c",
        signer=node.key,
        head=ChainHead(),
        now_ns=lambda: NOW,
        max_record_bytes=1 << 20,
    )
    windows = [JobWindow(node.job, PID, 0, None, Precision.BF16)]
    rounds = [(node.readings(node.t + k * S, 1.0, 0.5), windows) for k in range(100)]
    node.t += 100 * S
    data = builder.build_rounds(rounds).to_bytes()
    assert len(data) > MAX_ENTRY_BYTES
    return data


def ingest(cfg, envelopes: list[bytes]) -> list[cpb.Ack]:
    async def main() -> list[cpb.Ack]:
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await submit(channel, envelopes)
        finally:
            await service.stop()

    return run(main())


def test_a_record_over_the_entry_bound_is_refused_with_the_limit_named(db_path, tmp_path):
    node = past_node("node-a", gpus=8)
    enroll(db_path, node)
    cfg = replace(config(db_path), tlog=TlogConfig(tiles_dir=tmp_path / "tiles"))
    large = old_agent_record(node)
    [refused, accepted] = ingest(cfg, [large, node.envelope()])
    assert (refused.status, refused.reason) == (cpb.ACK_STATUS_REJECTED, "oversized")
    assert f"envelope is {len(large)} bytes, limit 65535" in refused.detail
    assert accepted.status == cpb.ACK_STATUS_ACCEPTED
    store = SQLiteStore(db_path)
    # The log holds the key's enrollment and the record it can serve, not the other.
    assert store.log_size() == 2
    store.close()


def test_without_tiles_the_limit_may_be_raised_for_records_older_agents_spooled(db_path):
    node = past_node("node-a", gpus=8)
    enroll(db_path, node)
    [ack] = ingest(replace(config(db_path), max_envelope_bytes=1 << 20), [old_agent_record(node)])
    assert ack.status == cpb.ACK_STATUS_ACCEPTED


def test_a_log_holding_an_entry_over_the_bound_still_publishes_its_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry accepted before (the limit raised, tiles off) cannot be put in an entry bundle:
    that bundle is left out (logged), every hash tile and the checkpoint are written."""
    log = MemoryLog()
    log.grow_to(300)
    log.add(b"x" * (MAX_ENTRY_BYTES + 1))
    tiles = tmp_path / "tiles"
    service = TlogService(TlogConfig(tiles_dir=tiles), TileLog(log, KEY, "c.example/log"), direct)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR)
    assert service.publish()
    written = {str(p.relative_to(tiles)) for p in tiles.rglob("*") if p.is_file()}
    assert written == {r.path() for r in new_tiles(0, 301)} - {"tile/entries/001.p/45"} | {
        "checkpoint"
    }
    assert "entry bundle tile/entries/001.p/45 not written: entry 44 is 65536 bytes" in caplog.text


def direct(fn, *args):  # the tests' "store thread" is the caller's
    return fn(*args)
