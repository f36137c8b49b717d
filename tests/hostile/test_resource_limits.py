"""What one client may make a collector spend: a real collector over mTLS, small limits.

Each test starts a CollectorService (127.0.0.1:0, SQLite in tmp_path, a throwaway CA) with the
one limit it checks turned down, then behaves like the attacker of issue 17: streams beyond the
caps, idle streams, a flood of garbage envelopes, TCP connections that never start TLS, a client
certificate from another CA. The figures under load are bench/flood.py's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from flopwatch import certs
from flopwatch.agent.sender import explain_connect_failure
from flopwatch.collector.config import ServerLimits
from flopwatch.collector.server import CollectorService, grpc_options
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.collector.collector_helpers import make_pki, run
from tests.collector.server_helpers import config, enroll, past_node

ACCEPTED = cpb.ACK_STATUS_ACCEPTED
REJECTED = cpb.ACK_STATUS_REJECTED


class Pki:
    def __init__(self, tmp_path: Path) -> None:
        self.files = make_pki(tmp_path / "ca")
        self.files["ca_key"].chmod(0o600)
        # A second client certificate of the same CA: another peer on the same address.
        ca = certs.CertifiedKey(
            certs.load_certificate(self.files["ca_cert"]),
            certs.load_private_key(self.files["ca_key"]),
        )
        second = certs.issue(ca.cert, ca.key, "second client", server=False, valid_days=1)
        self.other = {"client_cert": tmp_path / "c2.pem", "client_key": tmp_path / "c2.key"}
        certs.write_pair(self.other["client_cert"], self.other["client_key"], second)

    def server(self) -> dict[str, Any]:
        f = self.files
        return {
            "insecure": False,
            "tls_ca": f["ca_cert"],
            "tls_cert": f["server_cert"],
            "tls_key": f["server_key"],
        }

    def client(self, pki: dict[str, Path] | None = None) -> grpc.ChannelCredentials:
        pki = pki or self.files
        return grpc.ssl_channel_credentials(
            root_certificates=self.files["ca_cert"].read_bytes(),
            private_key=pki["client_key"].read_bytes(),
            certificate_chain=pki["client_cert"].read_bytes(),
        )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "collector.db"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "ca").mkdir()
    return Pki(tmp_path)


async def until(condition, what: str, timeout_s: float = 20.0) -> None:
    """Wait for `condition()` (a state of the server, not a guess at timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def stub(channel: grpc.aio.Channel) -> collector_pb2_grpc.IngestServiceStub:
    return collector_pb2_grpc.IngestServiceStub(channel)


async def silent(hold: asyncio.Event):
    """A request stream that sends nothing until `hold` is set."""
    await hold.wait()
    return
    yield


async def acks_of(call) -> list[cpb.Ack]:
    return [a async for r in call for a in r.acks]


def garbage(i: int, size: int) -> cpb.SubmitRequest:
    return cpb.SubmitRequest(
        envelope=envelope_pb2.Envelope(payload_type=f"garbage-{i}", payload=os.urandom(size))
    )


def test_streams_beyond_the_per_address_cap_are_refused(db_path: Path) -> None:
    cfg = config(db_path, server=ServerLimits(max_streams_per_address=3))

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        assert service._ingest is not None
        hold = asyncio.Event()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                idle = [stub(channel).Submit(silent(hold)) for _ in range(3)]
                await until(lambda: service._ingest.caps.open_streams() == 3, "3 open streams")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await acks_of(stub(channel).Submit(silent(hold)))
                hold.set()  # the three end: room again
                for call in idle:
                    await acks_of(call)
                await until(lambda: service._ingest.caps.open_streams() == 0, "streams closed")
                node = past_node()
                enroll(db_path, node)
                requests = [
                    cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(e))
                    for e in node.envelopes(2)
                ]
                acks = await acks_of(stub(channel).Submit(iter(requests)))
            return refused.value, acks, service._ingest.stats()
        finally:
            await service.stop()

    refused, acks, stats = run(main())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams_per_address" in (refused.details() or "")
    assert [a.status for a in acks] == [ACCEPTED, ACCEPTED]
    assert stats.refused == {"max_streams_per_address": 1}


def test_streams_beyond_the_per_certificate_cap_are_refused(db_path: Path, pki: Pki) -> None:
    cfg = config(
        db_path,
        server=ServerLimits(max_streams_per_address=0, max_streams_per_certificate=2),
        **pki.server(),
    )

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        assert service._ingest is not None
        hold = asyncio.Event()
        try:
            target = f"127.0.0.1:{port}"
            async with (
                grpc.aio.secure_channel(target, pki.client()) as one,
                grpc.aio.secure_channel(target, pki.client(pki.other)) as other,
            ):
                held = [stub(one).Submit(silent(hold)) for _ in range(2)]
                await until(lambda: service._ingest.caps.open_streams() == 2, "2 open streams")
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await acks_of(stub(one).Submit(silent(hold)))
                # Another certificate from the same address is another peer.
                third = stub(other).Submit(silent(hold))
                await until(lambda: service._ingest.caps.open_streams() == 3, "a third stream")
                hold.set()
                for call in (*held, third):
                    await acks_of(call)
            return refused.value
        finally:
            await service.stop()

    refused = run(main())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams_per_certificate" in (refused.details() or "")


def test_an_idle_stream_is_closed(db_path: Path) -> None:
    cfg = config(db_path, server=ServerLimits(stream_idle_timeout_s=0.2))
    node = past_node()
    enroll(db_path, node)

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        hold = asyncio.Event()  # never set: the client would hold the stream forever
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as idle:
                    await acks_of(stub(channel).Submit(silent(hold)))

                async def one_then_silence():
                    yield cpb.SubmitRequest(
                        envelope=envelope_pb2.Envelope.FromString(node.envelopes(1)[0])
                    )
                    await hold.wait()

                call = stub(channel).Submit(one_then_silence())
                acks = [a async for r in _until_error(call) for a in r.acks]
            assert service._ingest is not None
            return idle.value, acks, service._ingest.stats()
        finally:
            await service.stop()

    idle, acks, stats = run(main())
    assert idle.code() == grpc.StatusCode.UNAVAILABLE
    assert "no record for 0.2 s" in (idle.details() or "")
    assert [a.status for a in acks] == [ACCEPTED]  # acked first, then closed for idleness
    assert stats.idle_closed == 2


async def _until_error(call):
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE


def test_a_flood_of_garbage_is_held_to_its_byte_budget_and_logged_once(
    db_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    budget = 64 * 1024
    cfg = config(db_path, server=ServerLimits(max_inflight_bytes_per_peer=budget), **pki.server())
    node = past_node()
    enroll(db_path, node)
    n, size = 200, 16 * 1024

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            target = f"127.0.0.1:{port}"
            async with (
                grpc.aio.secure_channel(target, pki.client()) as attacker,
                grpc.aio.secure_channel(target, pki.client(pki.other)) as honest,
            ):
                flood = stub(attacker).Submit(iter([garbage(i, size) for i in range(n)]))
                records = [
                    cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(e))
                    for e in node.envelopes(5)
                ]
                flooded, acked = await asyncio.gather(
                    acks_of(flood), acks_of(stub(honest).Submit(iter(records)))
                )
            assert service._ingest is not None
            return flooded, acked, service._ingest.stats(), service
        finally:
            await service.stop()

    flooded, acked, stats, service = run(main())
    assert [a.status for a in flooded] == [REJECTED] * n
    assert [a.status for a in acked] == [ACCEPTED] * 5
    # Never more than the attacker's share plus the honest node's envelopes in flight.
    assert stats.inflight_bytes_peak <= budget + 5 * max(len(r) for r in node.envelopes(5))
    assert stats.budget_waits > 0 and stats.inflight_bytes == 0
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 2, lines  # the first at once, the rest in one summary at stop
    assert lines[0].startswith("rejected record from 127.0.0.1 cert ")
    assert f"{n - 1} record(s) rejected" in lines[1]
    peers = {
        labels["peer"]: value
        for family in service.registry.collect()
        if family.name == "flopwatch_peer_records_rejected"
        for _, labels, value, *_ in family.samples
    }
    assert list(peers.values()) == [n]  # one peer, every record of the flood


def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def closed_by_server(s: socket.socket) -> bool:
    """Blocks (up to the socket's timeout) until the server closes; False if it does not."""
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_tcp_connection_that_never_starts_tls_is_dropped_after_the_handshake_timeout(
    db_path: Path, pki: Pki
) -> None:
    cfg = config(db_path, server=ServerLimits(handshake_timeout_s=0.3), **pki.server())

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            s = raw_connect(port)
            with s:
                return await asyncio.to_thread(closed_by_server, s)
        finally:
            await service.stop()

    assert run(main())  # before the socket's 10 s timeout; gRPC's default keeps it 120 s


def test_connections_beyond_the_cap_are_closed_before_the_handshake(
    db_path: Path, pki: Pki
) -> None:
    cfg = config(
        db_path,
        server=ServerLimits(max_connections=2, handshake_timeout_s=60),
        **pki.server(),
    )

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            held = [raw_connect(port) for _ in range(2)]
            third = raw_connect(port)
            refused = await asyncio.to_thread(closed_by_server, third)
            for s in held:
                s.setblocking(False)
                with pytest.raises(BlockingIOError):  # still open, nothing to read
                    s.recv(1)
            for s in (*held, third):
                s.close()
            return refused
        finally:
            await service.stop()

    assert run(main())


def test_a_certificate_from_another_ca_is_counted_and_explained_to_the_agent(
    db_path: Path, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (tmp_path / "stranger").mkdir()
    stranger = make_pki(tmp_path / "stranger")
    cfg = config(db_path, **pki.server())

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            target = f"127.0.0.1:{port}"
            wrong = grpc.ssl_channel_credentials(
                root_certificates=pki.files["ca_cert"].read_bytes(),
                private_key=stranger["client_key"].read_bytes(),
                certificate_chain=stranger["client_cert"].read_bytes(),
            )
            async with grpc.aio.secure_channel(target, wrong) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await acks_of(stub(channel).Submit(iter(())))
            after_refusal = service.connections.counts()
            async with grpc.aio.secure_channel(target, pki.client()) as channel:
                await acks_of(stub(channel).Submit(iter(())))
            service.connections.flush(everything=True)
            return refused.value, after_refusal, service.connections.counts()
        finally:
            await service.stop()

    refused, after_refusal, after_good = run(main())
    assert after_refusal == (1, 0)  # accepted, never carried a call
    assert after_good == (2, 1)
    hint = explain_connect_failure(refused.code(), refused.details() or "", insecure=False)
    assert "refused our client certificate" in hint and "--tls-ca" in hint
    [line] = [r.getMessage() for r in caplog.records if "carried no call" in r.getMessage()]
    assert line.startswith("1 TLS connection(s)")


def test_limits_reach_grpc_as_its_own_options() -> None:
    options = dict(grpc_options(replace(ServerLimits(), handshake_timeout_s=2.5), 1000))
    assert options["grpc.server_handshake_timeout_ms"] == 2500
    assert options["grpc.max_allowed_incoming_connections"] == 10_000
    assert options["grpc.max_receive_message_length"] == 1000


def test_a_timeout_past_what_grpc_holds_is_as_good_as_none() -> None:
    """gRPC's channel arguments are C ints: 100 years of keepalive is 24.8 days, not a crash."""
    years = replace(ServerLimits(), keepalive_time_s=100 * 365 * 86400.0)
    assert dict(grpc_options(years, 1000))["grpc.keepalive_time_ms"] == 2**31 - 1
