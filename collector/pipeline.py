"""One ingest queue shared by every Submit stream: commits batch across streams.

A frontier cluster is many agents, each sending one envelope per interval on its own stream. If
each stream were ingested on its own, every envelope would be its own commit (a 1,000-node
soak measured ~540 envelopes/s that way, commit-bound). Instead every stream hands its envelopes
to this pipeline; each round takes whatever ALL streams have queued at that moment (at least
one, at most `max_commit_batch`), ingests it on the store's thread as one commit, and resolves
each envelope's future with its ack. No timers: an idle collector answers a lone envelope at
once, a busy one batches more per commit.

Envelopes of one stream are queued, judged and acked in the order the stream sent them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from collector.ingest import Ack

log = logging.getLogger(__name__)

IngestFn = Callable[[Sequence[tuple[bytes, bytes | None]]], list[Ack]]
_Item = tuple[bytes, bytes | None, "asyncio.Future[Ack]"]


class IngestPipeline:
    """Queue envelopes from any stream; ingest them in cross-stream batches on `executor`."""

    def __init__(self, ingest: IngestFn, executor: Executor, max_batch: int) -> None:
        self._ingest = ingest
        self._executor = executor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def submit(self, data: bytes, presented: bytes | None) -> asyncio.Future[Ack]:
        """Queue one envelope; the future resolves to its ack once its batch is committed (or
        raises what the ingest raised). Call from the event loop the collector serves on."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="flopwatch-ingest-pipeline")
        future: asyncio.Future[Ack] = loop.create_future()
        self._queue.put_nowait((data, presented, future))
        return future

    async def close(self) -> None:
        """Stop taking batches; envelopes still queued get no ack (their senders resend)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            while len(items) < self._max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            batch = [(data, presented) for data, presented, _ in items]
            try:
                acks = await loop.run_in_executor(self._executor, self._ingest, batch)
            except Exception as e:  # each waiting stream decides what to tell its client
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, _, future), ack in zip(items, acks, strict=True):
                if not future.done():  # a stream that went away cancelled its futures
                    future.set_result(ack)
