"""Node trust on a running collector: tokens over gRPC, an agent enrolling itself, and a
revocation by `flopwatch nodes revoke` (another connection) refusing the very next batch."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from flopwatch.agent.config import AgentConfig
from flopwatch.agent.sender import ENROLL_TOKEN_METADATA, read_enroll_token
from flopwatch.agent.service import Agent
from flopwatch.cli.main import main
from flopwatch.collector.enrollment import TOKEN_METADATA, issue_token
from flopwatch.collector.rpc.servicer import PUBLIC_KEY_METADATA
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.paths import H100_TRACE

TRACE = H100_TRACE / "trace.jsonl"


def make_token(db_path: Path, node_id: str) -> str:
    store = SQLiteStore(db_path)
    token, _ = issue_token(store, node_id, 3600, time.time_ns())
    store.close()
    return token


def test_agent_and_collector_agree_on_the_metadata_key():
    assert ENROLL_TOKEN_METADATA == TOKEN_METADATA


def test_a_token_in_metadata_enrolls_the_presented_key_once(db_path):
    first, second = past_node("gpu-1"), past_node("gpu-1")
    token = make_token(db_path, "gpu-1")

    def md(node):
        return ((PUBLIC_KEY_METADATA, node.public_raw.hex()), (TOKEN_METADATA, token))

    async def main_():
        service = CollectorService(config(db_path))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                acks = await submit(channel, first.envelopes(2), metadata=md(first))
                again = await submit(channel, first.envelopes(1), metadata=md(first))
                with pytest.raises(grpc.aio.AioRpcError) as spent:
                    await submit(channel, second.envelopes(1), metadata=md(second))
                with pytest.raises(grpc.aio.AioRpcError) as keyless:
                    await submit(channel, second.envelopes(1), metadata=((TOKEN_METADATA, token),))
                return acks + again, spent.value, keyless.value
        finally:
            await service.stop()

    acks, spent, keyless = run(main_())
    assert [a.status for a in acks] == [cpb.ACK_STATUS_ACCEPTED] * 3
    assert spent.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in spent.details()
    assert keyless.code() == grpc.StatusCode.INVALID_ARGUMENT
    store = SQLiteStore(db_path)
    assert [(n.key_id, n.node_id, n.status) for n in store.nodes()] == [
        (first.key_id, "gpu-1", "enrolled")
    ]
    store.close()


def test_revocation_refuses_the_next_batch_of_an_open_stream(db_path, capsys):
    node = past_node("gpu-2")
    enroll(db_path, node)

    def request(data: bytes) -> cpb.SubmitRequest:
        return cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))

    async def main_():
        service = CollectorService(config(db_path))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = collector_pb2_grpc.CollectorStub(channel).Submit()
                await call.write(request(node.envelope()))
                before = await call.read()
                # An operator revokes the key from another process's connection to the db.
                code = await asyncio.to_thread(
                    main, ["nodes", "revoke", "--db", f"sqlite:{db_path}", node.key_id[:12]]
                )
                assert code == 0
                await call.write(request(node.envelope()))
                after = await call.read()
                await call.done_writing()
                return before, after
        finally:
            await service.stop()

    before, after = run(main_())
    assert [a.status for a in before.acks] == [cpb.ACK_STATUS_ACCEPTED]
    assert [(a.status, a.reason) for a in after.acks] == [(cpb.ACK_STATUS_REJECTED, "revoked_key")]
    assert f"revoked key {node.key_id}" in capsys.readouterr().out


def test_an_agent_enrolls_itself_with_a_token_file(tmp_path):
    db_path = tmp_path / "c.db"
    token_file = tmp_path / "node.token"
    token_file.write_text(make_token(db_path, "node-1") + "\n")
    os.chmod(token_file, 0o600)

    async def main_():
        service = CollectorService(config(db_path))
        port, _ = await service.start()
        try:
            agent = Agent(
                AgentConfig(
                    collector=f"127.0.0.1:{port}",
                    backend=f"replay:{TRACE}",
                    state_dir=tmp_path / "agent",
                    node_id="node-1",
                    cluster="test",
                    replay_speed=None,
                    insecure=True,
                    drain_timeout_s=60,
                    backoff_initial_s=0.05,
                    backoff_max_s=0.2,
                    enroll_token_file=token_file,
                )
            )
            return await asyncio.to_thread(agent.run)
        finally:
            await service.stop()

    assert run(main_()) == 0
    store = SQLiteStore(db_path)
    [node] = store.nodes()
    assert (node.node_id, node.status) == ("node-1", "enrolled")
    assert store.chain_states()[0].held > 0
    assert store.job_totals() and all(t.flops_upper > 0 for t in store.job_totals())
    store.close()


def test_an_agent_refuses_a_token_file_others_can_read(tmp_path):
    path = tmp_path / "token"
    path.write_text("fwe1_x")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_enroll_token(path)
    path.chmod(0o600)
    assert read_enroll_token(path) == "fwe1_x"
    assert read_enroll_token(None) is None
