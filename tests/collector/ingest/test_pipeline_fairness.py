"""The ingest pipeline takes envelopes from each peer in turn, within a batch's count and bytes,
so a peer's backlog never delays another peer's envelope by more than one batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from flopwatch.collector.ingest.ingestor import Ack
from flopwatch.collector.ingest.pipeline import IngestPipeline
from tests.collector.collector_helpers import run


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[tuple[str, bytes]]] = []

    def ingest(self, batch):
        self.batches.append([(s.peer, s.envelope) for s in batch])
        return [Ack("k", 0, "rejected", "malformed") for _ in batch]


def drive(recorder: Recorder, submissions, cancel: int = 0, **kw) -> None:
    """Submit everything before the pipeline takes its first batch (cancelling the first
    `cancel` futures, as a stream that went away does); wait for every ack."""

    async def main():
        with ThreadPoolExecutor(max_workers=1) as pool:
            pipeline = IngestPipeline(recorder.ingest, pool, **kw)
            try:
                futures = [pipeline.submit(data, None, peer) for peer, data in submissions]
                for f in futures[:cancel]:
                    f.cancel()
                await asyncio.gather(*futures, return_exceptions=True)
            finally:
                await pipeline.close()

    run(main())


def test_a_flooding_peer_gets_one_turn_per_round_like_any_other():
    recorder = Recorder()
    flood = [("flood", b"garbage %d" % i) for i in range(1000)]
    drive(recorder, [*flood, ("node", b"record")], max_batch=16)
    first = recorder.batches[0]
    assert ("node", b"record") in first  # not behind the flood's 1000
    assert [p for p, _ in first[:2]] == ["flood", "node"]
    assert sum(len(b) for b in recorder.batches) == 1001
    assert all(len(b) <= 16 for b in recorder.batches)


def test_one_peers_envelopes_keep_their_order():
    recorder = Recorder()
    drive(recorder, [("a", b"%d" % i) for i in range(50)], max_batch=8)
    assert [d for b in recorder.batches for _, d in b] == [b"%d" % i for i in range(50)]


def test_a_batch_stops_at_its_byte_cap_but_takes_at_least_one():
    recorder = Recorder()
    big = b"x" * 1000
    drive(
        recorder,
        [("a", big), ("b", b"y" * 100), ("c", b"z" * 100)],
        max_batch=16,
        max_batch_bytes=250,
    )
    assert [[len(d) for _, d in b] for b in recorder.batches] == [[1000], [100, 100]]


def test_envelopes_of_a_stream_that_went_away_are_not_ingested():
    recorder = Recorder()
    drive(recorder, [("gone", b"1"), ("gone", b"2"), ("node", b"3")], max_batch=16, cancel=2)
    assert [d for b in recorder.batches for _, d in b] == [b"3"]
