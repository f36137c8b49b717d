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

Enrollment token: an agent may send `flopwatch-enroll-token` metadata next to its public key; it
is redeemed before the stream's first record, and a refused token ends the stream with
PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor

import grpc
from google.protobuf.message import DecodeError

from flopwatch.collector.enrollment import TOKEN_METADATA
from flopwatch.collector.ingest.ingestor import Ack, Ingestor
from flopwatch.collector.ingest.pipeline import IngestPipeline, VerifyFn
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


async def _read(
    requests: AsyncIterator[pb.SubmitRequest],
    submit: Callable[[bytes], asyncio.Future[Ack]],
    queue: asyncio.Queue[asyncio.Future[Ack] | None],
    room: asyncio.Semaphore,
) -> None:
    """Submit each envelope's bytes and queue its future; queue None when the stream ends (or
    reading fails)."""
    try:
        async for request in requests:
            await room.acquire()
            queue.put_nowait(submit(request.envelope.SerializeToString()))
    finally:
        queue.put_nowait(None)  # the queue is unbounded (room bounds it), so this never waits


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
    ) -> None:
        self._ingestor = ingestor
        self._executor = executor
        self._limits = limits
        self._pipeline = IngestPipeline(
            ingestor.ingest_from, executor, limits.max_commit_batch, verify=verify
        )

    async def close(self) -> None:
        """Stop the shared ingest pipeline (after the server stopped taking streams)."""
        await self._pipeline.close()

    async def Submit(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: SubmitContext
    ) -> AsyncIterator[pb.SubmitResponse]:
        presented = await _presented_key(context)
        token = _metadata(context, TOKEN_METADATA)
        if token is not None:
            await self._redeem(token, presented, context)
        queue: asyncio.Queue[asyncio.Future[Ack] | None] = asyncio.Queue()
        room = asyncio.Semaphore(self._limits.max_commit_batch)
        submit = functools.partial(self._pipeline.submit, presented=presented)
        reader = asyncio.create_task(_read(request_iterator, submit, queue, room))
        peeked: list[asyncio.Future[Ack] | None] = []  # taken from the queue, not yet answered
        try:
            while (future := peeked.pop() if peeked else await queue.get()) is not None:
                try:
                    acks = [await future]
                    room.release()
                    while not queue.empty():  # with it, every later ack that is ready now
                        later = queue.get_nowait()
                        if later is None or not later.done():
                            peeked.append(later)
                            break
                        acks.append(later.result())
                        room.release()
                except FlopwatchError as e:
                    await context.abort(grpc.StatusCode.INTERNAL, str(e))
                yield pb.SubmitResponse(acks=[ack_message(a) for a in acks])
            try:
                await reader  # re-raises a failure to read the request stream
            except DecodeError as e:  # a frame that is not a SubmitRequest: the client's fault
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"request is not a SubmitRequest: {e}"
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
