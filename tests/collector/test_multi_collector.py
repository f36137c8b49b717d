"""Three collectors on one PostgreSQL schema, over real gRPC, with agents that switch collectors
and send the same envelopes to two of them at once, plus a second agent measuring the same GPUs:
every signed record counts once, the totals equal one collector's, every alert fires once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

import grpc
import pytest

from flopwatch import merkle
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.collector.store.records import AlertEvent
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.statements import NODE_KEY_TYPE
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.collector.collector_helpers import RecordingSink, run, statuses
from tests.nodes import Node, S, expected_totals

pytestmark = pytest.mark.postgres

STATUS = {
    cpb.ACK_STATUS_ACCEPTED: "accepted",
    cpb.ACK_STATUS_DUPLICATE: "duplicate",
    cpb.ACK_STATUS_REJECTED: "rejected",
    cpb.ACK_STATUS_RETRY: "retry",
}
CHUNK = 5  # envelopes an agent sends to one collector before it "reconnects" to another


def past_node(node_id: str, **kw) -> Node:
    """Readings in the past of the real clock the services run on."""
    return Node(node_id, gpus=2, start_ns=time.time_ns() - 86400 * S, **kw)


async def submit(port: int, envelopes: Sequence[bytes]) -> list[tuple[bytes, str, str]]:
    """One agent stream: (envelope, status, reason) per envelope; what it was told to retry it
    sends again (on a new stream)."""
    out: list[tuple[bytes, str, str]] = []
    todo = list(envelopes)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = collector_pb2_grpc.CollectorStub(channel)
        for _ in range(10):
            requests = [
                cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(d)) for d in todo
            ]
            acks = [a async for r in stub.Submit(iter(requests)) for a in r.acks]
            assert len(acks) == len(todo)
            out += [(d, STATUS[a.status], a.reason) for d, a in zip(todo, acks, strict=True)]
            todo = [d for d, a in zip(todo, acks, strict=True) if STATUS[a.status] == "retry"]
            if not todo:
                break
        assert todo == []
    return out


def streams(envs: list[bytes], first: int, collectors: int) -> list[tuple[int, list[bytes]]]:
    """An agent's envelopes in chunks, each to the next collector (it reconnects elsewhere);
    every other chunk ALSO to a second collector at once (it retried before an ack came)."""
    out = []
    for n, i in enumerate(range(0, len(envs), CHUNK)):
        chunk = envs[i : i + CHUNK]
        out.append(((first + n) % collectors, chunk))
        if n % 2 == 0:
            out.append(((first + n + 1) % collectors, chunk))
    return out


def test_collectors_sharing_postgres_count_each_record_once(postgres_url, tmp_path, make_ingestor):
    nodes = [past_node(f"node-{i}") for i in range(3)]
    nodes.append(past_node("node-3", job="slurm:c/2"))
    twin = Node(  # a second agent on node-0, measuring its GPUs over the same seconds
        "node-0-twin", gpus=2, start_ns=nodes[0].t, gpu_prefix="GPU-node-0"
    )
    setup = PostgresStore(postgres_url)
    for n in [*nodes, twin]:
        setup.enroll(n.public_raw, n.node_id)
    envs = {n.node_id: n.envelopes(30) for n in [*nodes, twin]}
    signed = [e for n in nodes for e in envs[n.node_id]]
    expected = expected_totals(nodes, signed)
    big = expected["slurm:c/1"][1]
    # Crossed early, midway and by the very last record; one never reached.
    thresholds = (big // 7, big // 2, big, big + 1)
    collectors = 3
    plan = [s for i, n in enumerate([*nodes, twin]) for s in streams(envs[n.node_id], i, 3)]

    async def main():
        sinks = [RecordingSink() for _ in range(collectors)]
        services = [
            CollectorService(
                CollectorConfig(
                    listen="127.0.0.1:0",
                    db=postgres_url,
                    metrics_listen=None,
                    insecure=True,
                    thresholds=thresholds,
                    log_key=tmp_path / "collector-key.pem",  # one log, one key
                ),
                sinks=[sink],
            )
            for sink in sinks
        ]
        ports = [(await s.start())[0] for s in services]
        try:
            acks = await asyncio.gather(*(submit(ports[c], chunk) for c, chunk in plan))
            listings = []
            for port in ports:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = collector_pb2_grpc.CollectorStub(channel)
                    listings.append(await stub.ListJobs(cpb.ListJobsRequest()))
        finally:
            for s in services:
                await s.stop()
        return [a for stream in acks for a in stream], listings, sinks

    acks, listings, sinks = run(main())

    # Every record counted once: each of a node's envelopes accepted exactly once across the
    # collectors; of node-0 and its twin, one of each overlapping pair.
    accepted = Counter(d for d, status, _ in acks if status == "accepted")
    assert {s for _, s, _ in acks} <= {"accepted", "duplicate", "rejected"}
    for n in nodes[1:]:
        assert [accepted[e] for e in envs[n.node_id]] == [1] * 30
    for own, other in zip(envs["node-0"], envs["node-0-twin"], strict=True):
        assert accepted[own] + accepted[other] == 1
    rejected = {d: reason for d, s, reason in acks if s == "rejected"}
    assert set(rejected.values()) == {"overlap"}
    assert set(rejected) <= set(envs["node-0"]) | set(envs["node-0-twin"])

    # The totals every collector reports: what the agents signed, and one collector's result.
    one = _single_collector_totals(tmp_path, make_ingestor, [*nodes, twin], plan, thresholds)
    for listing in listings:
        got = {
            j.job_id: [int(j.flops_estimate), int(j.flops_upper), j.gpu_intervals]
            for j in listing.jobs
        }
        assert {job: t[:2] for job, t in got.items()} == expected
        assert got == one

    # Each alert fired exactly once, by one of the collectors.
    fired = Counter(
        (e.job_id, e.threshold) for s in sinks for e in s.events if isinstance(e, AlertEvent)
    )
    due = {(job, t) for job, (_, upper) in expected.items() for t in thresholds if t <= upper}
    assert set(fired) == due and set(fired.values()) == {1}
    assert {(a.job_id, a.threshold) for a in setup.fired_alerts()} == due
    # One transparency log, appended to by all three: dense, each accepted record once, and
    # its stored subtrees give the root the leaves do.
    # The log also holds each node key's enrollment, logged once by whichever collector did.
    size = setup.log_size()
    entries = setup.log_entries(0, size)
    keys = [
        i for i, e in enumerate(entries) if Envelope.from_bytes(e).payload_type == NODE_KEY_TYPE
    ]
    assert len(keys) == len(setup.nodes())
    assert size - len(keys) == sum(accepted.values()) == len(signed)
    leaves = {e.leaf_index: e.envelope for job in expected for e in setup.job_evidence(job).entries}
    assert sorted([*leaves, *keys]) == list(range(size))
    assert set(leaves.values()) == set(accepted)
    assert all(entries[i] == envelope for i, envelope in leaves.items())
    root = TransparencyLog(setup, SigningKey.generate()).root(size)
    assert root == merkle.root_hash([merkle.leaf_hash(e) for e in entries])
    setup.close()


def _single_collector_totals(tmp_path, make_ingestor, nodes, plan, thresholds):
    """The same deliveries through one collector (SQLite), one after another."""
    store = SQLiteStore(tmp_path / "single.db")
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)
    ingestor = make_ingestor(store, thresholds=thresholds)
    for _, chunk in plan:
        assert "retry" not in statuses(ingestor.ingest(chunk))
    totals = {
        t.job_id: [t.flops_estimate, t.flops_upper, t.gpu_intervals] for t in store.job_totals()
    }
    store.close()
    return totals
