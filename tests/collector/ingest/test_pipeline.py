"""The ingest pipeline with verify workers: verifying runs one batch ahead of committing."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from flopwatch.collector.ingest.ingestor import Ack
from flopwatch.collector.ingest.pipeline import IngestPipeline
from tests.collector.collector_helpers import run


class Stages:
    """A verify stage that marks each envelope, and an ingest stage whose first batch waits
    until the second batch has been verified."""

    def __init__(self, *, fail_verify: bool = False) -> None:
        self.verified: list[list[bytes]] = []
        self.ingested: list[list[tuple[bytes, object]]] = []
        self.first_verified = threading.Event()
        self.second_verified = threading.Event()
        self.fail_verify = fail_verify

    def verify(self, pairs):
        self.verified.append([data for data, _ in pairs])
        self.first_verified.set()
        if len(self.verified) == 2:
            self.second_verified.set()
        if self.fail_verify:
            raise RuntimeError("worker pool broken")
        return [f"record of {data.decode()}" for data, _ in pairs]

    def ingest(self, batch):
        if not self.ingested:
            # Only a pipeline that verifies ahead gets past this: a sequential one would verify
            # the second batch after this one is committed.
            assert self.second_verified.wait(timeout=60), "second batch never verified"
        self.ingested.append([(s.envelope, s.verified) for s in batch])
        return [Ack("k", int(s.envelope.decode()), "accepted") for s in batch]


def stream(stages: Stages, n: int) -> list[int]:
    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            pipeline = IngestPipeline(stages.ingest, pool, max_batch=256, verify=stages.verify)
            try:
                first = pipeline.submit(b"1", None)
                # The first batch is taken alone, before the others are submitted.
                assert await asyncio.to_thread(stages.first_verified.wait, 60)
                rest = [pipeline.submit(str(i).encode(), b"key") for i in range(2, n + 1)]
                acks = await asyncio.gather(first, *rest)
            finally:
                await pipeline.close()
        return [a.sequence for a in acks]

    return run(main())


def test_the_next_batch_is_verified_while_the_one_before_is_committed():
    stages = Stages()
    assert stream(stages, 5) == [1, 2, 3, 4, 5]
    assert stages.verified == [[b"1"], [b"2", b"3", b"4", b"5"]]
    assert stages.ingested == [
        [(b"1", "record of 1")],
        [(str(i).encode(), f"record of {i}") for i in range(2, 6)],
    ]


def test_a_failing_verify_stage_leaves_verifying_to_the_ingest_thread():
    stages = Stages(fail_verify=True)
    assert stream(stages, 3) == [1, 2, 3]
    assert [v for batch in stages.ingested for _, v in batch] == [None, None, None]
