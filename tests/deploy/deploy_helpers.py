"""Helpers for the deploy/ tests: paths, system tools, and a real collector on loopback.

(Named deploy_helpers, not helpers, so it cannot collide with another test folder's module.)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flopwatch.collector.config import CollectorConfig, MetricsSeries
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.transport import ingest_stub
from flopwatch.v1 import collector_pb2, envelope_pb2
from tests.nodes import Node, S

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
T = TypeVar("T")


def tool(name: str) -> str:
    """Path of a command-line tool: the virtual environment's (dev extra) first, then PATH.

    A missing tool fails the test: `make tools` (a dependency of `make test`) installs the
    Debian ones, `make venv` the PyPI ones.
    """
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make tools` and `make venv`")
    return found


def promql_metric_names(expr: str) -> set[str]:
    """The flopwatch_* metric names a PromQL expression reads."""
    return set(re.findall(r"\bflopwatch_[a-zA-Z0-9_]+\b", expr))


def exported_metric_names(metrics_text: str) -> set[str]:
    """Sample names in a /metrics page (counters as NAME_total), parsed by prometheus_client."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:  # a family with no sample yet still names its series
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def assert_reads_only_exported_metrics(exprs: Sequence[str], live: LiveCollector) -> None:
    """Every flopwatch_* metric the expressions read is on the live collector's /metrics."""
    exported = exported_metric_names(live.metrics_text())
    used = set().union(*(promql_metric_names(e) for e in exprs))
    assert used, "no flopwatch metric found in the queries"
    missing = sorted(used - exported)
    assert not missing, f"queries read metrics the collector does not export: {missing}"


class LiveCollector:
    """A real CollectorService (SQLite, plaintext gRPC and /metrics on 127.0.0.1, ports chosen
    free) served from its own event loop on a background thread, so that synchronous tests and
    outside processes (Prometheus) can talk to it while it runs."""

    def __init__(self, directory: Path, *, thresholds: Sequence[int]) -> None:
        self.db = directory / "collector.db"
        self.config = CollectorConfig(
            listen="127.0.0.1:0",
            db=f"sqlite:{self.db}",
            metrics_listen="127.0.0.1:0",
            thresholds=tuple(thresholds),
            insecure=True,
            # The nodes' records end about a day ago (`node`): keep their series on /metrics
            # for the whole test, past the default 24 h of --metrics-recent.
            metrics_series=MetricsSeries(recent_s=7 * 86400.0),
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-collector")
        self._service: CollectorService | None = None
        self.grpc_port = 0
        self.metrics_port = 0

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def enroll(self, *nodes: Node) -> None:
        """Enroll node keys the way an operator does, in the database, before the start."""
        store = SQLiteStore(self.db)
        try:
            for n in nodes:
                store.enroll(n.public_raw, n.node_id)
        finally:
            store.close()

    def start(self) -> None:
        self._thread.start()
        self._service = CollectorService(self.config)
        grpc_port, metrics_port = self._call(self._service.start())
        assert metrics_port is not None
        self.grpc_port, self.metrics_port = grpc_port, metrics_port

    def stop(self) -> None:
        if self._service is not None:
            self._call(self._service.stop())
            self._service = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=60)
        self._loop.close()

    def submit(self, envelopes: Sequence[bytes]) -> list[collector_pb2.Ack]:
        """Stream envelopes as an agent does; return the collector's acks."""
        requests = (
            collector_pb2.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))
            for data in envelopes
        )
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            responses = ingest_stub(channel).Submit(requests, timeout=60)
            return [ack for response in responses for ack in response.acks]

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text: str = response.read().decode()
        return text


def past_node(node_id: str, **kw: Any) -> Node:
    """A node whose readings lie in the past of the real clock the collector runs on."""
    return Node(node_id, start_ns=time.time_ns() - 86400 * S, **kw)


def feed_every_kind_of_record(live: LiveCollector) -> dict[str, list[Any]]:
    """Accepted records (crossing the live collector's threshold), a duplicate, a chain fork and
    a record from an unknown key: every flopwatch_* family then has samples. Returns the ack
    statuses (accepted, duplicate) and rejection reasons, for the caller to check."""
    node = past_node("gpu-node-1", gpus=2, job="slurm:c/81234")
    stranger = past_node("stranger")
    live.enroll(node)
    first = node.envelopes(3)
    accepted = live.submit(first)
    duplicate = live.submit(first[:1])
    forked = live.submit([node.envelope(builder=node.new_builder())])
    unknown = live.submit([stranger.envelope()])
    return {
        "accepted": [a.status for a in accepted],
        "duplicate": [a.status for a in duplicate],
        "rejected": [a.reason for a in forked + unknown],
    }


def started(live: LiveCollector) -> Iterator[LiveCollector]:
    """Start, yield, always stop: the body of a fixture."""
    try:
        live.start()
        yield live
    finally:
        live.stop()
