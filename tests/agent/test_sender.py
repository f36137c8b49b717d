"""The sender against a real in-process grpc.aio server running a fake collector."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from flopwatch.agent.sender import LEGACY_SUBMIT_METHOD, Sender, SenderState
from flopwatch.agent.spool.store import Spool
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey, public_raw
from flopwatch.v1 import collector_pb2_grpc
from tests.agent.agent_fakes import (
    ACCEPTED,
    REJECTED,
    RETRY,
    AioServicer,
    FakeCollector,
    chain,
    start_aio,
)

KEY = SigningKey.generate()
N = 20


def make_spool(tmp_path: Path, n: int = N) -> Spool:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=4096)
    for seq, env in enumerate(chain(KEY, n), 1):
        spool.append(seq, env.to_bytes())
    return spool


def make_sender(port: int, spool: Spool, **kw: object) -> Sender:
    return Sender(
        f"127.0.0.1:{port}",
        spool,
        public_key_raw=public_raw(KEY.public_key),
        insecure=True,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
        rng=random.Random(0),
        **kw,  # type: ignore[arg-type]
    )


async def start_ingest_only(fake: FakeCollector) -> tuple[grpc.aio.Server, int]:
    """A collector of this release without the deprecated service: IngestService alone."""
    server = grpc.aio.server()
    collector_pb2_grpc.add_IngestServiceServicer_to_server(AioServicer(fake), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


Start = Callable[[FakeCollector], Awaitable[tuple[grpc.aio.Server, int]]]


async def deliver(
    fake: FakeCollector, spool: Spool, start: Start = start_aio, **kw: object
) -> Sender:
    """Run a sender until the spool is drained (or fail after a generous ceiling). `start_aio`
    serves only the deprecated Collector service, as a collector of the release before did."""
    server, port = await start(fake)
    sender = make_sender(port, spool, **kw)
    task = asyncio.create_task(sender.run())
    try:
        assert await sender.drain(timeout=30), f"not drained; arrivals {fake.arrivals}"
    finally:
        task.cancel()
        await asyncio.wait([task])
        await server.stop(None)
    return sender


def test_sends_everything_in_order_with_the_public_key(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector()
    states: list[SenderState] = []
    sender = asyncio.run(deliver(fake, spool, on_state=states.append))
    assert fake.arrivals == list(range(1, N + 1))
    assert sorted(fake.held) == list(range(1, N + 1))
    assert fake.public_keys == [public_raw(KEY.public_key).hex()]
    assert spool.depth() == 0
    assert (sender.stats.sent, sender.stats.acked, sender.stats.rejected) == (N, N, 0)
    assert sender.stats.last_success_unix is not None
    assert states[0] == "connecting" and states[-1] == "stopped"


def test_streams_to_the_ingest_service(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector()
    with caplog.at_level(logging.INFO, logger="flopwatch.agent.sender"):
        sender = asyncio.run(deliver(fake, spool, start_ingest_only))
    assert fake.arrivals == list(range(1, N + 1)) and spool.depth() == 0
    assert (sender.stats.sent, sender.stats.acked) == (N, N)
    # Before its stream, the sender asked with an empty one (no key) whether the service is there.
    assert fake.streams == [[], list(range(1, N + 1))]
    assert fake.public_keys == ["", public_raw(KEY.public_key).hex()]
    assert LEGACY_SUBMIT_METHOD not in caplog.text


def test_older_collector_gets_the_deprecated_service_and_it_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The collector answers IngestService UNIMPLEMENTED on every connection (two here: the
    # first stream is dropped); the sender falls back each time, without a backoff, and says
    # so once.
    spool = make_spool(tmp_path)
    fake = FakeCollector(drop_after=5)
    with caplog.at_level(logging.INFO, logger="flopwatch.agent.sender"):
        sender = asyncio.run(deliver(fake, spool, start_aio))
    assert sender.stats.reconnects >= 1 and fake.streams[0] == [1, 2, 3, 4, 5]
    assert sorted(fake.held) == list(range(1, N + 1)) and spool.depth() == 0
    told = [r for r in caplog.records if LEGACY_SUBMIT_METHOD in r.message]
    assert [(r.levelname, "no IngestService" in r.message) for r in told] == [("WARNING", True)]


def test_dropped_stream_reconnects_and_resends_pending(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector(drop_after=5)  # #5 arrives, the stream dies before it is acked
    sender = asyncio.run(deliver(fake, spool))
    assert len(fake.streams) >= 2
    assert fake.streams[0] == [1, 2, 3, 4, 5]
    # The new stream resends, in order, everything without an ack (acks for 1..4 may have
    # been lost with the stream: resending those is safe, the collector answers DUPLICATE).
    second = fake.streams[1]
    assert second == list(range(second[0], N + 1)) and second[0] <= 5
    assert sorted(fake.held) == list(range(1, N + 1))
    assert sender.stats.reconnects >= 1 and spool.depth() == 0


def test_silent_stream_times_out_and_reconnects(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector(mute_first=True)  # the first stream takes envelopes, never answers
    sender = asyncio.run(deliver(fake, spool, ack_timeout_s=0.05))
    assert fake.streams[0] == list(range(1, N + 1))
    assert fake.streams[1] == list(range(1, N + 1))  # all resent on a new stream
    assert sorted(fake.held) == list(range(1, N + 1)) and sender.stats.reconnects >= 1


def test_rejected_is_settled_and_not_resent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector(decide=lambda seq, attempt: REJECTED if seq == 3 else ACCEPTED)
    sender = asyncio.run(deliver(fake, spool))
    assert fake.arrivals.count(3) == 1
    assert sender.stats.rejected == 1 and sender.stats.acked == N - 1
    assert spool.depth() == 0
    assert any(r.levelname == "ERROR" and "rejected #3" in r.message for r in caplog.records)


def test_retry_is_resent_until_accepted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector(
        decide=lambda seq, attempt: RETRY if seq in (2, 7) and attempt < 3 else ACCEPTED
    )
    with caplog.at_level(logging.INFO, logger="flopwatch.agent.sender"):
        sender = asyncio.run(deliver(fake, spool))
    assert fake.arrivals.count(2) == 3 and fake.arrivals.count(7) == 3
    assert len(fake.streams) == 1  # retried on the same stream
    assert sender.stats.retried == 4 and sorted(fake.held) == list(range(1, N + 1))
    # One line per answer that asked for retries, naming the records and the collector's reason.
    lines = [r.message for r in caplog.records if "asked to retry" in r.message]
    assert lines and all(line.endswith("later: test") for line in lines)
    assert sum(int(line.split("retry ")[1].split(" ")[0]) for line in lines) == 4


def test_window_limits_envelopes_in_flight(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    fake = FakeCollector(batch_acks=4)  # acks only once 4 are owed, several per response
    sender = asyncio.run(deliver(fake, spool, window=4))
    assert fake.max_owed == 4  # the sender filled its window and never went past it
    assert fake.arrivals == list(range(1, N + 1)) and sender.stats.acked == N


def test_notify_from_another_thread_sends_new_records(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, n=0)
    envs = chain(KEY, 10)

    async def scenario() -> FakeCollector:
        fake = FakeCollector()
        server, port = await start_aio(fake)
        sender = make_sender(port, spool)
        task = asyncio.create_task(sender.run())

        def produce() -> None:  # the sampling thread's part
            for seq, env in enumerate(envs, 1):
                spool.append(seq, env.to_bytes())
                sender.notify()

        await asyncio.to_thread(produce)
        assert await sender.drain(timeout=30)
        task.cancel()
        await asyncio.wait([task])
        await server.stop(None)
        return fake

    fake = asyncio.run(scenario())
    assert sorted(fake.held) == list(range(1, 11)) and fake.arrivals == list(range(1, 11))


def test_drain_times_out_without_a_collector(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, n=2)

    async def scenario() -> bool:
        sender = make_sender(1, spool)  # nothing listens on port 1
        task = asyncio.create_task(sender.run())
        drained = await sender.drain(timeout=0.05)
        task.cancel()
        await asyncio.wait([task])
        return drained

    assert asyncio.run(scenario()) is False
    assert spool.depth() == 2


def test_secure_channel_needs_credentials(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, n=0)
    with pytest.raises(ConfigError):
        Sender("127.0.0.1:1", spool, public_key_raw=public_raw(KEY.public_key))


def test_notify_before_run_is_harmless(tmp_path: Path) -> None:
    spool = make_spool(tmp_path, n=0)
    sender = make_sender(1, spool)
    threading.Thread(target=sender.notify).start()
    sender.notify()
