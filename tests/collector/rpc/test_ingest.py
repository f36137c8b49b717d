"""IngestServicer.Submit batching (within and across streams), driven directly with a fake
ingestor (no timers)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from flopwatch.collector.ingest.ingestor import Ack
from flopwatch.collector.rpc.ingest import IngestServicer
from flopwatch.errors import StoreError
from flopwatch.limits import Limits
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import envelope_pb2
from tests.collector.collector_helpers import run


class FakeIngestor:
    """Acks every envelope "accepted". The first call tells `on_first` it has begun, then waits
    until `release` is set, so the test controls what is queued while a batch is ingested."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.items: list[list[tuple[bytes, bytes | None]]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.on_first = lambda: None

    def ingest_from(self, items):
        if not self.batches:
            self.on_first()
            assert self.release.wait(timeout=30)
        self.batches.append(len(items))
        self.items.append(list(items))
        self.threads.add(threading.current_thread().name)
        return [Ack("k", int(e.decode()), "accepted") for e in _payloads(e for e, *_ in items)]


def _payloads(envelopes):
    return [envelope_pb2.Envelope.FromString(e).payload for e in envelopes]


class FakeContext:
    def __init__(self, public_key: bytes | None = None) -> None:
        self._metadata = () if public_key is None else (("flopwatch-public-key", public_key.hex()),)

    def invocation_metadata(self):
        return self._metadata

    def peer(self):
        return "ipv4:127.0.0.1:50000"

    def auth_context(self):
        return {}


def request(i: int) -> cpb.SubmitRequest:
    return cpb.SubmitRequest(envelope=envelope_pb2.Envelope(payload=str(i).encode()))


def submit(n: int, limit: int, *, hold_first: bool = True) -> tuple[FakeIngestor, list[int]]:
    """Stream n envelopes: the first alone, the rest while the first batch is being ingested
    (with hold_first, the first batch is held until all n are queued)."""
    ingestor = FakeIngestor()
    if not hold_first:
        ingestor.release.set()

    async def main():
        loop = asyncio.get_running_loop()
        first_batch_started = asyncio.Event()
        ingestor.on_first = lambda: loop.call_soon_threadsafe(first_batch_started.set)

        async def requests():
            yield request(1)
            await first_batch_started.wait()
            for i in range(2, n + 1):
                yield request(i)
            # The reader queued every envelope before asking for more: let ingest go on.
            ingestor.release.set()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as pool:
            servicer = IngestServicer(ingestor, pool, limits=Limits(max_commit_batch=limit))
            return [
                a.sequence
                async for response in servicer.Submit(requests(), FakeContext())
                for a in response.acks
            ]

    return ingestor, run(main())


def test_submit_batches_what_is_queued_and_acks_in_order():
    ingestor, sequences = submit(50, limit=256)
    assert sequences == list(range(1, 51))
    # Envelope 1 was alone in the queue; 2..50 arrived during its commit: one more batch.
    assert ingestor.batches == [1, 49]
    assert ingestor.threads == {"ingest_0"}


def test_submit_batches_are_capped_by_the_commit_limit():
    # The reader may run only `limit` envelopes ahead, so the first batch cannot be held here.
    ingestor, sequences = submit(20, limit=3, hold_first=False)
    assert sequences == list(range(1, 21))
    assert ingestor.batches[0] == 1
    assert max(ingestor.batches) <= 3
    assert sum(ingestor.batches) == 20


def test_empty_stream_ends_without_ingesting():
    ingestor = FakeIngestor()

    async def requests():
        return
        yield

    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            servicer = IngestServicer(ingestor, pool)
            return [r async for r in servicer.Submit(requests(), FakeContext())]

    assert run(main()) == []
    assert ingestor.batches == []


def test_reader_failure_ends_the_call_with_that_error():
    ingestor = FakeIngestor()
    ingestor.release.set()

    async def requests():
        yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope(payload=b"1"))
        raise ConnectionResetError("stream broke")

    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            servicer = IngestServicer(ingestor, pool)
            out = []
            try:
                async for r in servicer.Submit(requests(), FakeContext()):
                    out.append(r)
            except ConnectionResetError:
                return out, "raised"
            return out, "ended"

    out, how = run(main())
    assert how == "raised"
    assert [a.sequence for r in out for a in r.acks] == [1]


def test_streams_share_a_commit_and_each_gets_its_own_acks_in_order():
    # A first envelope holds the ingest thread; meanwhile two streams (two agents, two presented
    # keys) queue theirs. The next round commits both streams' envelopes as ONE batch, and each
    # stream is answered with its own acks, in its order.
    ingestor = FakeIngestor()

    async def main():
        loop = asyncio.get_running_loop()
        first_batch_started = asyncio.Event()
        ingestor.on_first = lambda: loop.call_soon_threadsafe(first_batch_started.set)
        queued = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def opener():
            yield request(0)

        async def stream(name: str, numbers: list[int]):
            await first_batch_started.wait()
            for i in numbers:
                yield request(i)
            queued[name].set()
            if all(e.is_set() for e in queued.values()):
                ingestor.release.set()

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as pool:
            servicer = IngestServicer(ingestor, pool)

            async def acks(requests, key):
                return [
                    a.sequence
                    async for r in servicer.Submit(requests, FakeContext(key))
                    for a in r.acks
                ]

            out = await asyncio.gather(
                acks(opener(), b"\x00" * 32),
                acks(stream("a", [1, 2, 3]), b"\xaa" * 32),
                acks(stream("b", [10, 20]), b"\xbb" * 32),
            )
            await servicer.close()
            return out

    first, a, b = run(main())
    assert (first, a, b) == ([0], [1, 2, 3], [10, 20])
    assert ingestor.batches == [1, 5]
    keys_by_number = {
        int(envelope_pb2.Envelope.FromString(data).payload): key
        for batch in ingestor.items
        for data, key, *_ in batch
    }
    assert keys_by_number == {
        0: b"\x00" * 32,
        1: b"\xaa" * 32,
        2: b"\xaa" * 32,
        3: b"\xaa" * 32,
        10: b"\xbb" * 32,
        20: b"\xbb" * 32,
    }
    # Each stream's envelopes keep their order inside the shared batch.
    order = [int(envelope_pb2.Envelope.FromString(d).payload) for d, *_ in ingestor.items[1]]
    assert [n for n in order if n < 10] == [1, 2, 3]
    assert [n for n in order if n >= 10] == [10, 20]


def test_ingest_failure_ends_every_waiting_stream_with_internal():
    class Broken(FakeIngestor):
        def ingest_from(self, items):
            raise StoreError("disk on fire")

    class AbortingContext(FakeContext):
        async def abort(self, code, details):
            raise RuntimeError(f"{code.name}: {details}")

    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            servicer = IngestServicer(Broken(), pool)

            async def one(i):
                async def requests():
                    yield request(i)

                try:
                    return [r async for r in servicer.Submit(requests(), AbortingContext())]
                except RuntimeError as e:
                    return str(e)

            out = await asyncio.gather(one(1), one(2))
            await servicer.close()
            return out

    assert run(main()) == ["INTERNAL: disk on fire", "INTERNAL: disk on fire"]
