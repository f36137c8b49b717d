"""A collector service for tests: its configuration, enrolled nodes, and a Submit client."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import grpc

from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.nodes import Node, S


def past_node(node_id: str = "node-a", **kw) -> Node:
    """A node whose readings lie in the past of the real clock the service runs on."""
    return Node(node_id, start_ns=time.time_ns() - 86400 * S, **kw)


def config(db_path, **kw) -> CollectorConfig:
    base = CollectorConfig(
        listen="127.0.0.1:0",
        db=f"sqlite:{db_path}",
        metrics_listen="127.0.0.1:0",
        insecure=True,
    )
    return replace(base, **kw)


async def submit(
    channel: grpc.aio.Channel, envelopes: Sequence[bytes], metadata=()
) -> list[cpb.Ack]:
    async def requests():
        for data in envelopes:
            yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))

    stub = collector_pb2_grpc.CollectorStub(channel)
    acks: list[cpb.Ack] = []
    async for response in stub.Submit(requests(), metadata=metadata):
        acks.extend(response.acks)
    return acks


def enroll(db_path, *nodes: Node) -> None:
    store = SQLiteStore(db_path)
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)
    store.close()
