"""The Collector gRPC service: translates proto <-> `Ingestor` calls, nothing more.

All database work runs on ONE dedicated worker thread (the executor passed in, max_workers=1),
so the store's connection is only ever used from that thread.

Submit batches without timers: a reader task moves envelopes from the request stream into a
queue; each round takes whatever is queued at that moment (at least one envelope, at most
`limits.max_commit_batch`), ingests it as one commit and answers with one SubmitResponse holding
an ack per envelope, in order. A semaphore bounds how far the reader may run ahead, so a slow
database pushes back on the sender through gRPC flow control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor

import grpc

from collector.ingest import Ack, Ingestor
from collector.store import JobTotal
from flopwatch.errors import FlopwatchError
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.model import MODEL_VERSION
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


def ack_message(a: Ack) -> pb.Ack:
    return pb.Ack(
        key_id=a.key_id,
        sequence=a.sequence,
        status=_STATUS[a.status],
        reason=a.reason,
        detail=a.detail,
    )


def job_message(t: JobTotal) -> pb.JobTotal:
    return pb.JobTotal(
        job_id=t.job_id,
        flops_estimate=str(t.flops_estimate),
        flops_upper=str(t.flops_upper),
        first_start_unix_ns=t.first_start_ns,
        last_end_unix_ns=t.last_end_ns,
        gpu_intervals=t.gpu_intervals,
        thresholds_crossed=[str(x) for x in t.thresholds_crossed],
    )


async def _read(
    requests: AsyncIterator[pb.SubmitRequest],
    queue: asyncio.Queue[bytes | None],
    room: asyncio.Semaphore,
) -> None:
    """Queue each envelope's bytes; queue None when the stream ends (or reading fails)."""
    try:
        async for request in requests:
            await room.acquire()
            queue.put_nowait(request.envelope.SerializeToString())
    finally:
        queue.put_nowait(None)  # the queue is unbounded (room bounds it), so this never waits


class CollectorServicer(collector_pb2_grpc.CollectorServicer):
    """Submit and ListJobs, run on the ingest thread via `executor`."""

    def __init__(
        self, ingestor: Ingestor, executor: Executor, *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._ingestor = ingestor
        self._executor = executor
        self._limits = limits

    async def _ingest(self, batch: Sequence[bytes], presented: bytes | None) -> list[Ack]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._ingestor.ingest, batch, presented)

    async def Submit(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: SubmitContext
    ) -> AsyncIterator[pb.SubmitResponse]:
        presented = await _presented_key(context)
        limit = self._limits.max_commit_batch
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        room = asyncio.Semaphore(limit)
        reader = asyncio.create_task(_read(request_iterator, queue, room))
        try:
            ended = False
            while not ended:
                batch: list[bytes] = []
                item = await queue.get()  # wait for one; then take only what is there now
                while item is not None:
                    batch.append(item)
                    room.release()
                    if len(batch) >= limit or queue.empty():
                        break
                    item = queue.get_nowait()
                ended = item is None
                if batch:
                    try:
                        acks = await self._ingest(batch, presented)
                    except FlopwatchError as e:
                        await context.abort(grpc.StatusCode.INTERNAL, str(e))
                    yield pb.SubmitResponse(acks=[ack_message(a) for a in acks])
            await reader  # re-raises a failure to read the request stream
        finally:
            reader.cancel()

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: ListJobsContext
    ) -> pb.ListJobsResponse:
        loop = asyncio.get_running_loop()
        try:
            totals = await loop.run_in_executor(
                self._executor, self._ingestor.job_totals, request.job_prefix
            )
        except FlopwatchError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return pb.ListJobsResponse(
            jobs=[job_message(t) for t in totals],
            flop_model_version=MODEL_VERSION,
            alert_basis=self._ingestor.policy.basis,
        )


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
