"""IngestService: agents stream signed envelopes; translates proto <-> `Ingestor` calls, nothing
more.

All database work runs on ONE dedicated worker thread (the executor passed in, max_workers=1), so
the store's connection is only ever used from that thread. With `verify` (the collector's verify
workers, `flopwatch.collector.ingest.workers`), each batch is verified ahead, off that thread.

Submit batches across streams without timers: each stream's reader task hands envelopes to the
shared `IngestPipeline`, which commits whatever all streams have queued as one batch; the stream
answers, in order, with one SubmitResponse holding the acks that are ready. A semaphore bounds
how many envelopes a stream may have in flight (`limits.max_commit_batch`), so a slow database
pushes back on the sender through gRPC flow control.

What one client may spend (`ServerLimits`): a stream beyond the caps on streams per client
address and per certificate (`flopwatch.collector.rpc.admission`) ends at once with
RESOURCE_EXHAUSTED; each envelope read takes its size from the byte budget
(`flopwatch.collector.ingest.budget`, in total and per peer) until it is acked, and a stream
finding no room waits before it reads on; a stream with nothing in flight that sends nothing
for `stream_idle_timeout_s` ends with UNAVAILABLE (the agent reconnects when it has a record).

Enrollment token: an agent may send `flopwatch-enroll-token` metadata next to its public key; it
is redeemed before the stream's first record, and a refused token ends the stream with
PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from flopwatch.collector.config import ServerLimits
from flopwatch.collector.enrollment import TOKEN_METADATA
from flopwatch.collector.ingest.budget import ByteBudget
from flopwatch.collector.ingest.ingestor import Ack, Ingestor
from flopwatch.collector.ingest.pipeline import IngestPipeline, VerifyFn
from flopwatch.collector.rpc.admission import Peer, StreamCaps, peer_of
from flopwatch.errors import EnrollmentError, FlopwatchError
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.v1 import collector_pb2 as pb
from flopwatch.v1 import collector_pb2_grpc

# gRPC metadata key on Submit: the agent's raw Ed25519 public key, hex (trust on first use).
PUBLIC_KEY_METADATA = "flopwatch-public-key"

_STATUS = {
    "accepted": pb.ACK_STATUS_ACCEPTED,
    "duplicate": pb.ACK_STATUS_DUPLICATE,
    "rejected": pb.ACK_STATUS_REJECTED,
    "retry": pb.ACK_STATUS_RETRY,
}

SubmitContext = grpc.aio.ServicerContext[pb.SubmitRequest, pb.SubmitResponse]


def ack_message(a: Ack) -> pb.Ack:
    return pb.Ack(
        key_id=a.key_id,
        sequence=a.sequence,
        status=_STATUS[a.status],
        reason=a.reason,
        detail=a.detail,
    )


@dataclass(frozen=True)
class StreamStats:
    """What the metrics show of Submit streams and the byte budget."""

    open_streams: int
    refused: Mapping[str, int]  # streams refused, by the cap that refused them
    idle_closed: int
    inflight_bytes: int
    inflight_bytes_peak: int
    budget_waits: int
    queued: int  # envelopes waiting for a batch


class IdleStreamError(Exception):
    """The stream sent nothing for the idle timeout while nothing of it was in flight."""


class _Reader:
    """Reads a stream's envelopes and submits them, within the stream's room and the budget."""

    def __init__(
        self,
        submit: Callable[[bytes], asyncio.Future[Ack]],
        queue: asyncio.Queue[asyncio.Future[Ack] | None],
        room: asyncio.Semaphore,
        *,
        budget: ByteBudget,
        peer: str,
        idle_s: float,
    ) -> None:
        self._submit = submit
        self._queue = queue
        self._room = room
        self._budget = budget
        self._peer = peer
        self._idle_s = idle_s
        self.in_flight = 0  # envelopes submitted, not yet answered

    async def run(self, requests: AsyncIterator[pb.SubmitRequest]) -> None:
        """Submit each envelope's bytes and queue its future; queue None when the stream ends
        (or reading fails)."""
        try:
            while (request := await self._next(requests)) is not None:
                data = request.envelope.SerializeToString()
                await self._room.acquire()
                await self._budget.take(self._peer, len(data))
                future = self._submit(data)
                future.add_done_callback(functools.partial(self._give, len(data)))
                self.in_flight += 1
                self._queue.put_nowait(future)
        finally:
            self._queue.put_nowait(None)  # the queue is unbounded (room bounds it): no wait

    def _give(self, size: int, _: asyncio.Future[Ack]) -> None:
        self._budget.give(self._peer, size)  # acked, failed or dropped: the bytes are free

    def answered(self, n: int) -> None:
        self.in_flight -= n
        for _ in range(n):
            self._room.release()

    async def _next(self, requests: AsyncIterator[pb.SubmitRequest]) -> pb.SubmitRequest | None:
        """The next request; IdleStreamError when none comes for the idle timeout while
        nothing is in flight (an agent waiting for acks is not idle)."""
        read = asyncio.ensure_future(anext(requests, None))
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self._idle_s)
                if done:
                    return read.result()
                if self.in_flight == 0:
                    raise IdleStreamError(f"no record for {self._idle_s:g} s")
        finally:
            read.cancel()


def _drain(queue: asyncio.Queue[asyncio.Future[Ack] | None]) -> list[asyncio.Future[Ack] | None]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def _drop(futures: Sequence[asyncio.Future[Ack] | None]) -> None:
    """Cancel the futures of a stream that ended early (a failure among them was told)."""
    for future in futures:
        if future is not None and not future.cancel() and not future.cancelled():
            future.exception()  # retrieved, so asyncio does not report it as never retrieved


class IngestServicer(collector_pb2_grpc.IngestServiceServicer):
    """Submit, committed on the ingest thread via `executor`."""

    def __init__(
        self,
        ingestor: Ingestor,
        executor: Executor,
        *,
        limits: Limits = DEFAULT_LIMITS,
        verify: VerifyFn | None = None,
        server: ServerLimits | None = None,
    ) -> None:
        self._ingestor = ingestor
        self._executor = executor
        self._limits = limits
        self._server = server = server or ServerLimits()
        self._pipeline = IngestPipeline(
            ingestor.ingest_from,
            executor,
            limits.max_commit_batch,
            verify=verify,
            max_batch_bytes=server.max_commit_batch_bytes,
        )
        self.caps = StreamCaps(
            per_address=server.max_streams_per_address,
            per_certificate=server.max_streams_per_certificate,
        )
        self.budget = ByteBudget(
            total=server.max_inflight_bytes, per_peer=server.max_inflight_bytes_per_peer
        )
        self.refused_streams: dict[str, int] = {}  # why -> streams refused (caps)
        self.idle_streams = 0  # streams ended for sending nothing

    def stats(self) -> StreamStats:
        return StreamStats(
            open_streams=self.caps.open_streams(),
            refused=self.refused_streams.copy(),
            idle_closed=self.idle_streams,
            inflight_bytes=self.budget.used,
            inflight_bytes_peak=self.budget.peak,
            budget_waits=self.budget.waits,
            queued=self._pipeline.queued,
        )

    async def close(self) -> None:
        """Stop the shared ingest pipeline (after the server stopped taking streams)."""
        await self._pipeline.close()

    async def Submit(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: SubmitContext
    ) -> AsyncIterator[pb.SubmitResponse]:
        peer = peer_of(context)
        refused = self.caps.open(peer)
        if refused is not None:
            cap = refused.rpartition("(")[2].rstrip(")")
            self.refused_streams[cap] = self.refused_streams.get(cap, 0) + 1
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        try:
            async for response in self._submit(request_iterator, context, peer):
                yield response
        finally:
            self.caps.close(peer)

    async def _submit(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: SubmitContext, peer: Peer
    ) -> AsyncIterator[pb.SubmitResponse]:
        presented = await _presented_key(context)
        token = _metadata(context, TOKEN_METADATA)
        if token is not None:
            await self._redeem(token, presented, context)
        queue: asyncio.Queue[asyncio.Future[Ack] | None] = asyncio.Queue()
        room = asyncio.Semaphore(self._limits.max_commit_batch)
        submit = functools.partial(self._pipeline.submit, presented=presented, peer=peer.key)
        state = _Reader(
            submit,
            queue,
            room,
            budget=self.budget,
            peer=peer.key,
            idle_s=self._server.stream_idle_timeout_s,
        )
        reader = asyncio.create_task(state.run(request_iterator))
        peeked: list[asyncio.Future[Ack] | None] = []  # taken from the queue, not yet answered
        try:
            while (future := peeked.pop() if peeked else await queue.get()) is not None:
                try:
                    acks = [await future]
                    while not queue.empty():  # with it, every later ack that is ready now
                        later = queue.get_nowait()
                        if later is None or not later.done():
                            peeked.append(later)
                            break
                        acks.append(later.result())
                except FlopwatchError as e:
                    await context.abort(grpc.StatusCode.INTERNAL, str(e))
                state.answered(len(acks))
                yield pb.SubmitResponse(acks=[ack_message(a) for a in acks])
            try:
                await reader  # re-raises a failure to read the request stream
            except DecodeError as e:  # a frame that is not a SubmitRequest: the client's fault
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"request is not a SubmitRequest: {e}"
                )
            except IdleStreamError as e:
                self.idle_streams += 1
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"stream closed: {e} (stream_idle_timeout_s); reconnect to send more",
                )
        finally:
            reader.cancel()
            _drop([*peeked, *_drain(queue)])

    async def _redeem(self, token: str, presented: bytes | None, context: SubmitContext) -> None:
        if presented is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{TOKEN_METADATA} needs the agent's public key in {PUBLIC_KEY_METADATA}",
            )
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._executor, self._ingestor.enroll_with_token, token, presented
            )
        except EnrollmentError as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"enrollment refused: {e}")
        except FlopwatchError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))


def _metadata(context: SubmitContext, key: str) -> str | None:
    for k, value in context.invocation_metadata() or ():
        if k == key:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None


async def _presented_key(context: SubmitContext) -> bytes | None:
    """The raw public key the agent sent in metadata, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == PUBLIC_KEY_METADATA:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            try:
                return bytes.fromhex(text)
            except ValueError:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{PUBLIC_KEY_METADATA} is not hex"
                )
    return None
