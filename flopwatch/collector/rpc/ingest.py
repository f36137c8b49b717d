"""The Collector gRPC service: translates proto <-> `Ingestor` calls, nothing more.

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
PERMISSION_DENIED. Queries (ListJobs, ListJobGpus, ListNodes) are answered by
`flopwatch.collector.rpc.query`, and the transparency log's tree heads and proofs by
`flopwatch.collector.rpc.tlog`, on the same worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from flopwatch.collector.config import QueryLimits
from flopwatch.collector.enrollment import TOKEN_METADATA
from flopwatch.collector.ingest.ingestor import Ack, Ingestor
from flopwatch.collector.ingest.pipeline import IngestPipeline, VerifyFn
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.query import Query
from flopwatch.collector.rpc import query, tlog
from flopwatch.collector.rpc.query import job_message
from flopwatch.errors import ConfigError, EnrollmentError, FlopwatchError, LogRangeError
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
ListJobsContext = grpc.aio.ServicerContext[pb.ListJobsRequest, pb.ListJobsResponse]
JobGpusContext = grpc.aio.ServicerContext[pb.ListJobGpusRequest, pb.ListJobGpusResponse]
NodesContext = grpc.aio.ServicerContext[pb.ListNodesRequest, pb.ListNodesResponse]
__all__ = ["CollectorServicer", "ack_message", "job_message"]
T = TypeVar("T")


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


class CollectorServicer(collector_pb2_grpc.CollectorServicer):
    """Submit and the queries, run on the ingest thread via `executor`. Without a `query`
    the query RPCs answer UNIMPLEMENTED, and without a `log` the transparency-log RPCs."""

    def __init__(
        self,
        ingestor: Ingestor,
        executor: Executor,
        *,
        limits: Limits = DEFAULT_LIMITS,
        query: Query | None = None,
        query_limits: QueryLimits | None = None,
        log: TransparencyLog | None = None,
        verify: VerifyFn | None = None,
    ) -> None:
        self._ingestor = ingestor
        self._log = log
        self._executor = executor
        self._limits = limits
        self._query = query
        self._query_limits = query_limits or QueryLimits()
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

    async def _answer(
        self, context: grpc.aio.ServicerContext[Any, Any], fn: Callable[..., T], *args: Any
    ) -> T:
        """Run a query_api function on the ingest thread; map errors to status codes."""
        if self._query is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this collector answers no queries")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, fn, self._query, self._query_limits, *args
            )
        except ConfigError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except query.JobNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except FlopwatchError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: ListJobsContext
    ) -> pb.ListJobsResponse:
        return await self._answer(context, query.list_jobs, request, self._basis)

    async def ListJobGpus(
        self, request: pb.ListJobGpusRequest, context: JobGpusContext
    ) -> pb.ListJobGpusResponse:
        return await self._answer(context, query.list_job_gpus, request, self._basis)

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: NodesContext
    ) -> pb.ListNodesResponse:
        return await self._answer(context, query.list_nodes, request)

    async def _log_answer(
        self, context: grpc.aio.ServicerContext[Any, Any], fn: Callable[..., T], request: Any
    ) -> T:
        """Run a translog_api function on the store's thread; map errors to status codes."""
        if self._log is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this collector keeps no log")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, self._log, request)
        except LogRangeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except FlopwatchError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    async def GetTreeHead(
        self, request: pb.GetTreeHeadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTreeHeadResponse:
        return await self._log_answer(context, tlog.get_tree_head, request)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInclusionProofResponse:
        return await self._log_answer(context, tlog.get_inclusion_proof, request)

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetConsistencyProofResponse:
        return await self._log_answer(context, tlog.get_consistency_proof, request)

    @property
    def _basis(self) -> str:
        return self._ingestor.policy.basis


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
