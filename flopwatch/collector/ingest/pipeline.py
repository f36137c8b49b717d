"""One ingest queue shared by every Submit stream: commits batch across streams.

A frontier cluster is many agents, each sending one envelope per interval on its own stream. If
each stream were ingested on its own, every envelope would be its own commit (a 1,000-node
soak measured ~540 envelopes/s that way, commit-bound). Instead every stream hands its envelopes
to this pipeline; each round takes whatever ALL streams have queued at that moment (at least
one, at most `max_commit_batch`), ingests it on the store's thread as one commit, and resolves
each envelope's future with its ack. No timers: an idle collector answers a lone envelope at
once, a busy one batches more per commit.

With verify workers (`flopwatch.collector.ingest.workers`), a batch is first verified there, on its
own thread, while the store thread commits the batch before it: two stages, one batch apart, so
verifying and committing use different cores. The ingestor still judges every record itself.

Fair to every peer: envelopes wait in one queue per peer (client address and certificate), and
a round takes one envelope from each peer in turn, so a peer that queued thousands of envelopes
(a flood of garbage, say) costs the others at most one envelope of its own per turn, never its
whole backlog. A round also stops at `max_batch_bytes`, which bounds the work of one batch.

Envelopes of one stream are queued, judged and acked in the order the stream sent them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

from flopwatch.collector.ingest.ingestor import Ack, Submission
from flopwatch.verify.record import VerifiedRecord

log = logging.getLogger(__name__)

IngestFn = Callable[[Sequence[Submission]], list[Ack]]
# (envelope, presented key) pairs -> each one's record verified in advance, or None.
VerifyFn = Callable[[Sequence[tuple[bytes, bytes | None]]], list[VerifiedRecord | None]]
_Item = tuple[Submission, "asyncio.Future[Ack]"]
_Batch = tuple[list[_Item], list[Submission]]


class IngestPipeline:
    """Queue envelopes from any stream; ingest them in cross-stream batches on `executor`,
    verified first by `verify` (on a thread of its own) when one is given."""

    def __init__(
        self,
        ingest: IngestFn,
        executor: Executor,
        max_batch: int,
        verify: VerifyFn | None = None,
        max_batch_bytes: int | None = None,
    ) -> None:
        self._ingest = ingest
        self._executor = executor
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._verify = verify
        self._queues: OrderedDict[str, deque[_Item]] = OrderedDict()  # per peer, in turn
        self._ready = asyncio.Event()  # some queue holds an envelope
        self.queued = 0
        # At most one verified batch waits for the store thread: the next is being verified.
        self._verified: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=1)
        self._tasks: list[asyncio.Task[None]] = []
        self._verify_thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="flopwatch-verify")
            if verify is not None
            else None
        )

    def submit(self, data: bytes, presented: bytes | None, peer: str = "") -> asyncio.Future[Ack]:
        """Queue one envelope of `peer`; the future resolves to its ack once its batch is
        committed (or raises what the ingest raised). Call from the event loop the collector
        serves on."""
        loop = asyncio.get_running_loop()
        if not self._tasks or any(t.done() for t in self._tasks):
            self._start(loop)
        future: asyncio.Future[Ack] = loop.create_future()
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = deque()
        queue.append((Submission(data, presented, peer=peer), future))
        self.queued += 1
        self._ready.set()
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in self._tasks:
            task.cancel()
        if self._verify is None:
            self._tasks = [loop.create_task(self._run(), name="flopwatch-ingest-pipeline")]
        else:
            self._tasks = [
                loop.create_task(self._run_verify(), name="flopwatch-verify-pipeline"),
                loop.create_task(self._run_ingest(), name="flopwatch-ingest-pipeline"),
            ]

    async def close(self) -> None:
        """Stop taking batches; envelopes still queued get no ack (their senders resend)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self._verify_thread is not None:
            self._verify_thread.shutdown(wait=True)

    async def _take(self) -> list[_Item]:
        """At least one envelope, then one per peer in turn, up to the batch's count and bytes."""
        while not self._queues:
            self._ready.clear()
            await self._ready.wait()
        items: list[_Item] = []
        size = 0
        while self._queues and len(items) < self._max_batch:
            peer, queue = next(iter(self._queues.items()))
            submission, future = queue[0]
            if future.cancelled():  # its stream is gone: nobody waits for this ack
                pass
            elif (
                items
                and self._max_bytes is not None
                and (size + len(submission.envelope) > self._max_bytes)
            ):
                break
            else:
                items.append(queue[0])
                size += len(submission.envelope)
            queue.popleft()
            self.queued -= 1
            if queue:
                self._queues.move_to_end(peer)  # its next envelope waits for the others' turn
            else:
                del self._queues[peer]
        return items

    async def _run(self) -> None:
        while True:
            if items := await self._take():
                await self._commit(items, [s for s, _ in items])

    async def _run_verify(self) -> None:
        assert self._verify is not None
        loop = asyncio.get_running_loop()
        while True:
            items = await self._take()
            if not items:
                continue
            pairs = [(s.envelope, s.presented_key) for s, _ in items]
            try:
                verified = await loop.run_in_executor(self._verify_thread, self._verify, pairs)
            except Exception:  # verifying ahead only saves time: the ingestor verifies anyway
                log.exception("verifying a batch ahead failed; the ingest thread verifies it")
                verified = [None] * len(items)
            batch = [s._replace(verified=r) for (s, _), r in zip(items, verified, strict=True)]
            await self._verified.put((items, batch))

    async def _run_ingest(self) -> None:
        while True:
            items, batch = await self._verified.get()
            await self._commit(items, batch)

    async def _commit(self, items: list[_Item], batch: list[Submission]) -> None:
        loop = asyncio.get_running_loop()
        try:
            acks = await loop.run_in_executor(self._executor, self._ingest, batch)
        except Exception as e:  # each waiting stream decides what to tell its client
            for _, future in items:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), ack in zip(items, acks, strict=True):
            if not future.done():  # a stream that went away cancelled its futures
                future.set_result(ack)
