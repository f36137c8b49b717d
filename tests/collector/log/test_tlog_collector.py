"""A running collector with the C2SP log on: records streamed over gRPC come out as a witnessed
checkpoint, tiles over HTTP and files in a directory, all agreeing with its tree heads."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc

from flopwatch import merkle
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.note import open_note
from flopwatch.tlog.tiles import decode_bundle
from flopwatch.v1 import collector_pb2 as cpb
from tests.collector.collector_helpers import run
from tests.collector.log.witnessed import fetch, witnessed_log
from tests.collector.server_helpers import config, enroll, past_node, submit

ORIGIN = "collector.example/flopwatch"


def test_records_become_a_witnessed_checkpoint_tiles_and_files(db_path, tmp_path):
    witnessed = witnessed_log(tmp_path, ORIGIN, tiles_dir=tmp_path / "tiles")
    node = past_node("node-a", gpus=2)
    enroll(db_path, node)
    envs = node.envelopes(5)
    # The log: the node key's enrollment (logged when the collector starts), then 5 records.

    async def main() -> tuple[bytes, bytes, bytes]:
        service = CollectorService(
            replace(config(db_path), log_key=witnessed.key_path, tlog=witnessed.tlog)
        )
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                acks = await submit(channel, envs)
            assert {a.status for a in acks} == {cpb.ACK_STATUS_ACCEPTED}
            assert service.tlog is not None
            assert await asyncio.to_thread(service.tlog.publish)
            tiles_port = service.tlog.port
            assert tiles_port is not None
            checkpoint = await asyncio.to_thread(fetch, tiles_port, "/checkpoint")
            bundle = await asyncio.to_thread(fetch, tiles_port, "/tile/entries/000.p/6")
        finally:
            await service.stop()  # signs a last tree head
        store = SQLiteStore(db_path)
        head = TransparencyLog(store, witnessed.key).latest()
        store.close()
        assert head is not None and head.head.size == 6
        return checkpoint, bundle, head.head.root

    try:
        checkpoint, bundle, head_root = run(main())
    finally:
        witnessed.close()
    opened = open_checkpoint(checkpoint, [witnessed.log_verifier], origin=ORIGIN)
    assert opened.checkpoint.size == 6
    assert opened.checkpoint.root == head_root  # the same tree as the tree heads
    _, cosigned = open_note(checkpoint, [witnessed.cosigner.verifier])
    assert [s.name for s in cosigned] == ["w.example"]
    entries = decode_bundle(bundle, 6)
    assert merkle.root_hash([merkle.leaf_hash(e) for e in entries]) == opened.checkpoint.root
    assert (tmp_path / "tiles" / "checkpoint").read_bytes() == checkpoint
    assert (tmp_path / "tiles" / "tile" / "entries" / "000.p" / "6").read_bytes() == bundle
