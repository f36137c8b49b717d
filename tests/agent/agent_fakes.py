"""Test doubles for the agent tests: signed envelopes, synthetic traces and a fake collector.

The fake collector is a real gRPC server on 127.0.0.1:0 (grpc.aio for the sender tests, the
thread-pool server where the agent runs its own event loop) around one `FakeCollector` that
decides every ack and records what arrived. `running_agent` runs a whole agent in a thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from flopwatch.agent.backends.base import GpuBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.service import Agent
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc

ACCEPTED = cpb.ACK_STATUS_ACCEPTED
DUPLICATE = cpb.ACK_STATUS_DUPLICATE
REJECTED = cpb.ACK_STATUS_REJECTED
RETRY = cpb.ACK_STATUS_RETRY
T0 = 1_700_000_000  # unix seconds where synthetic traces start


def signed_envelope(key: SigningKey, sequence: int, previous: bytes = b"") -> Envelope:
    att = pb.Attestation(
        node_id="node-test", key_id=key.key_id, sequence=sequence, previous_digest=previous
    )
    return Envelope.sign(att.SerializeToString(deterministic=True), key)


def chain(key: SigningKey, n: int, first: int = 1) -> list[Envelope]:
    """n chained envelopes with sequences first, first+1, ... (all of one size: the first
    names a zero digest, which no verifier checks here)."""
    out: list[Envelope] = []
    for seq in range(first, first + n):
        out.append(signed_envelope(key, seq, out[-1].digest if out else bytes(32)))
    return out


def write_trace(path: Path, intervals: int, *, pid: int = 4242) -> Path:
    """A small trace in the recorder's format (fixtures/h100-trace-1/README.md)."""
    meta = {
        "type": "meta",
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-test",
        "arch": 9,
        "cores": 16896,
        "cc": [9, 0],
        "max_sm_clock_mhz": 1980,
        "driver": "test",
        "power_limit_mw": 700000,
        "interval_s": 1.0,
    }
    pipes = ("dfma_tensor", "hmma_tensor", "imma_tensor", "fp64", "fp32", "fp16")
    lines = [meta]
    for k in range(intervals):
        gpm = {p: 0.0 for p in pipes} | {"hmma_tensor": 40.0 + k, "fp32": 5.0}
        lines.append(
            {
                "type": "interval",
                "t0": T0 + k,
                "t1": T0 + k + 1,
                "gpm": gpm,
                "energy_mj": [1000 * k, 1000 * (k + 1)],
                "clock_polled_mhz": [1500 + k] * 10,
                "procs": [{"pid": pid, "mem": 1 << 20}],
                "proc_util": [{"pid": pid, "ts": 0, "sm": 60, "mem": 1}],
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_jobs(path: Path, intervals: int, *, pid: int = 4242) -> Path:
    job = {"job": "test:cluster/job-1", "pid": pid, "start": T0, "end": T0 + intervals}
    path.write_text(json.dumps([job]))
    return path


class FakeCollector:
    """Decides acks and records arrivals; shared by the aio and the thread-pool servicer.

    `decide(sequence, attempt)` gives the status of an envelope's attempt (1, 2, ...);
    `drop_after=k` aborts the first stream when its k-th envelope arrives, unacknowledged;
    `batch_acks=k` holds acks back until k are owed, then answers them in one response (so a
    sender that kept more than k in flight shows up in `max_owed`); `mute_first` never answers
    on the first stream (a half-open connection). A held envelope is answered DUPLICATE.
    """

    def __init__(
        self,
        *,
        decide: Callable[[int, int], cpb.AckStatus] | None = None,
        drop_after: int | None = None,
        batch_acks: int = 1,
        mute_first: bool = False,
    ) -> None:
        self.decide = decide or (lambda seq, attempt: ACCEPTED)
        self.drop_after = drop_after
        self.batch_acks = batch_acks
        self.mute_first = mute_first
        self.arrivals: list[int] = []  # sequences in arrival order, resends included
        self.streams: list[list[int]] = []  # arrivals per stream
        self.held: dict[int, bytes] = {}  # sequence -> envelope bytes
        self.public_keys: list[str | bytes] = []
        self.max_owed = 0
        self._owed: list[cpb.Ack] = []
        self._attempts: Counter[int] = Counter()

    def open(self, metadata: Any) -> None:
        self.streams.append([])
        self._owed = []
        self.public_keys.append(dict(metadata).get("flopwatch-public-key", ""))

    def handle(self, request: cpb.SubmitRequest) -> cpb.SubmitResponse | str | None:
        """The response to one envelope: None (not yet), or "drop" to drop the stream."""
        env = Envelope.from_message(request.envelope)
        att = pb.Attestation.FromString(env.payload)
        seq = att.sequence
        self.arrivals.append(seq)
        self.streams[-1].append(seq)
        if len(self.streams) == 1 and len(self.streams[0]) == self.drop_after:
            return "drop"
        if len(self.streams) == 1 and self.mute_first:
            return None
        self._attempts[seq] += 1
        status = self.decide(seq, self._attempts[seq])
        if status == ACCEPTED and seq in self.held:
            status = DUPLICATE
        if status == ACCEPTED:
            self.held[seq] = env.to_bytes()
        self._owed.append(cpb.Ack(key_id=att.key_id, sequence=seq, status=status, reason="test"))
        self.max_owed = max(self.max_owed, len(self._owed))
        if len(self._owed) < self.batch_acks:
            return None
        acks, self._owed = self._owed, []
        return cpb.SubmitResponse(acks=acks)


class AioServicer(collector_pb2_grpc.CollectorServicer):
    def __init__(self, fake: FakeCollector) -> None:
        self.fake = fake

    async def Submit(
        self, request_iterator: AsyncIterator[cpb.SubmitRequest], context: Any
    ) -> AsyncIterator[cpb.SubmitResponse]:
        self.fake.open(context.invocation_metadata())
        async for request in request_iterator:
            response = self.fake.handle(request)
            if response == "drop":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "test: stream dropped")
            if isinstance(response, cpb.SubmitResponse):
                yield response


class SyncServicer(collector_pb2_grpc.CollectorServicer):
    def __init__(self, fake: FakeCollector) -> None:
        self.fake = fake

    def Submit(
        self, request_iterator: Iterator[cpb.SubmitRequest], context: Any
    ) -> Iterator[cpb.SubmitResponse]:
        self.fake.open(context.invocation_metadata())
        for request in request_iterator:
            response = self.fake.handle(request)
            if response == "drop":
                context.abort(grpc.StatusCode.UNAVAILABLE, "test: stream dropped")
            if isinstance(response, cpb.SubmitResponse):
                yield response


async def start_aio(fake: FakeCollector) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    collector_pb2_grpc.add_CollectorServicer_to_server(AioServicer(fake), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def start_sync(fake: FakeCollector) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collector_pb2_grpc.add_CollectorServicer_to_server(SyncServicer(fake), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@contextlib.contextmanager
def running_agent(config: AgentConfig, backend: GpuBackend) -> Iterator[Agent]:
    """`config`'s agent on `backend`, started (within 30 s) in its own thread, stopped when the
    block ends; on a clean exit the thread must have ended."""
    agent = Agent(config, backend=backend)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert agent.started.wait(30)
        yield agent
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
