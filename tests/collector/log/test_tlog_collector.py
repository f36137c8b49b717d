"""A running collector with the C2SP log on: records streamed over gRPC come out as a witnessed
checkpoint, tiles over HTTP and files in a directory, all agreeing with its tree heads."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace

import grpc

from flopwatch import merkle
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Ed25519NoteSigner, open_note
from flopwatch.tlog.tiles import decode_bundle
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.witness.service import Witness, witness_handler
from flopwatch.witness.state import WitnessState
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, enroll, past_node, submit

TOKEN = "collector-tiles-token-0123"
ORIGIN = "collector.example/flopwatch"


def fetch(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return bytes(r.read())


def test_records_become_a_witnessed_checkpoint_tiles_and_files(db_path, tmp_path):
    key_path = tmp_path / "collector-key.pem"
    key = SigningKey.load_or_create(key_path)[0]
    log_verifier = Ed25519NoteSigner(ORIGIN, key.private_key).verifier
    cosigner = Cosigner("w.example", SigningKey.generate().private_key)
    state = WitnessState(tmp_path / "w.db")
    witness = HttpService(
        "127.0.0.1:0",
        witness_handler(Witness(cosigner=cosigner, logs={ORIGIN: [log_verifier]}, state=state)),
    )
    policy = tmp_path / "policy"
    policy.write_text(
        f"witness W {cosigner.verifier.vkey()} http://127.0.0.1:{witness.port}\nquorum W\n"
    )
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    tlog = TlogConfig(
        origin=ORIGIN,
        tiles_listen="127.0.0.1:0",
        tiles_dir=tmp_path / "tiles",
        token_file=token,
        witness_policy=policy,
        checkpoint_interval_s=3600,
    )
    node = past_node("node-a", gpus=2)
    enroll(db_path, node)
    envs = node.envelopes(5)

    async def main() -> tuple[bytes, bytes, bytes]:
        service = CollectorService(replace(config(db_path), log_key=key_path, tlog=tlog))
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
            bundle = await asyncio.to_thread(fetch, tiles_port, "/tile/entries/000.p/5")
        finally:
            await service.stop()  # signs a last tree head
        store = SQLiteStore(db_path)
        head = TransparencyLog(store, key).latest()
        store.close()
        assert head is not None and head.head.size == 5
        return checkpoint, bundle, head.head.root

    try:
        checkpoint, bundle, head_root = run(main())
    finally:
        witness.close()
        state.close()
    opened = open_checkpoint(checkpoint, [log_verifier], origin=ORIGIN)
    assert opened.checkpoint.size == 5
    assert opened.checkpoint.root == head_root  # the same tree as the tree heads
    _, cosigned = open_note(checkpoint, [cosigner.verifier])
    assert [s.name for s in cosigned] == ["w.example"]
    entries = decode_bundle(bundle, 5)
    assert merkle.root_hash([merkle.leaf_hash(e) for e in entries]) == opened.checkpoint.root
    assert (tmp_path / "tiles" / "checkpoint").read_bytes() == checkpoint
    assert (tmp_path / "tiles" / "tile" / "entries" / "000.p" / "5").read_bytes() == bundle
