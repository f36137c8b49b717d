"""Silent nodes: detected after --silent-after, alerted once per silence episode (across
restarts), shown in metrics, and delivered through the running collector's sinks."""

from __future__ import annotations

import asyncio
import json
import threading

from prometheus_client import CollectorRegistry

from flopwatch.collector.alerts.events import NodeSilent, ThresholdPolicy
from flopwatch.collector.alerts.liveness import LivenessMonitor
from flopwatch.collector.config import WebhookConfig
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.factory import open_store
from tests.collector.collector_helpers import Clock, RecordingSink, run
from tests.collector.server_helpers import config, enroll
from tests.nodes import NOW, Node, S

SILENT_AFTER = 300


def parts(store_url, clock):
    store = open_store(store_url, now_ns=clock, create=True)
    sink = RecordingSink()
    ingestor = Ingestor(store, ThresholdPolicy([10**30]), [], now_ns=clock)
    monitor = LivenessMonitor(store, [sink], silent_after_s=SILENT_AFTER, now_ns=clock)
    return store, ingestor, monitor, sink


def test_a_node_is_silent_after_the_timeout_and_alerted_once_per_episode(store_url):
    clock = Clock()
    store, ingestor, monitor, sink = parts(store_url, clock)
    busy, quiet, gone = Node("busy"), Node("quiet"), Node("gone")
    for n in (busy, quiet, gone):
        store.enroll(n.public_raw, n.node_id)
    store.revoke(gone.key_id)
    ingestor.ingest([busy.envelope()])
    sent_at = clock.ns

    clock.advance(SILENT_AFTER)  # exactly the timeout: not yet
    assert monitor.check() == []
    view = {v.node_id: v for v in monitor.snapshot()}
    assert set(view) == {"busy", "quiet"}  # revoked keys are not watched
    assert (view["busy"].last_record_ns, view["busy"].silent) == (sent_at, False)
    assert (view["quiet"].last_record_ns, view["quiet"].silent) == (None, False)

    clock.advance(1)
    events = sorted(monitor.check(), key=lambda e: e.node_id)
    assert [(e.node_id, e.never_sent, e.since_ns) for e in events] == [
        ("busy", False, sent_at),
        ("quiet", True, NOW),  # never sent: quiet since its enrollment
    ]
    assert all(isinstance(e, NodeSilent) and e.silent_after_s == SILENT_AFTER for e in events)
    assert sorted(sink.events, key=lambda e: e.node_id) == events
    clock.advance(3600)
    assert monitor.check() == []  # the same episodes: no second alert
    assert all(v.silent for v in monitor.snapshot())

    # A record ends busy's episode; the next silence is a new one.
    ingestor.ingest([busy.envelope()])
    assert monitor.check() == []
    assert {v.node_id: v.silent for v in monitor.snapshot()} == {"busy": False, "quiet": True}
    clock.advance(SILENT_AFTER + 1)
    assert [e.node_id for e in monitor.check()] == ["busy"]
    store.close()


def test_last_record_and_alerted_episode_survive_a_restart(store_url):
    clock = Clock()
    store, ingestor, monitor, sink = parts(store_url, clock)
    node = Node("n")
    store.enroll(node.public_raw, "n")
    ingestor.ingest([node.envelope()])
    sent_at = clock.ns
    clock.advance(SILENT_AFTER + 1)
    assert len(monitor.check()) == 1
    store.close()

    store, _, monitor, sink = parts(store_url, clock)  # a restarted collector
    assert store.node(node.key_id).last_record_ns == sent_at
    assert monitor.check() == []
    assert [v.silent for v in monitor.snapshot()] == [True]
    assert sink.events == []
    store.close()


def test_liveness_metrics(store_url):
    clock = Clock()
    store, ingestor, monitor, _ = parts(store_url, clock)
    a, b = Node("a"), Node("b")
    for n in (a, b):
        store.enroll(n.public_raw, n.node_id)
    ingestor.ingest([a.envelope()])
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, (), liveness=monitor.snapshot)
    clock.advance(SILENT_AFTER + 1)
    ingestor.ingest([b.envelope()])
    monitor.check()

    def value(name, node):
        return registry.get_sample_value(name, {"key_id": node.key_id, "node": node.node_id})

    last = "flopwatch_node_last_record_timestamp_seconds"
    assert value(last, a) == NOW / 1e9
    assert value(last, b) == (NOW + (SILENT_AFTER + 1) * S) / 1e9
    assert value("flopwatch_node_silent", a) == 1
    assert value("flopwatch_node_silent", b) == 0
    store.close()


def test_a_running_collector_alerts_a_silent_node_through_its_sinks(db_path, receiver):
    rx, url = receiver
    node = Node("n")
    enroll(db_path, node)
    sink = RecordingSink()
    alerted = threading.Event()
    sink.emit = lambda e: (sink.events.append(e), alerted.set())  # type: ignore[method-assign]
    cfg = config(
        db_path,
        silent_after_s=0.2,
        liveness_check_s=0.05,
        webhook=WebhookConfig(url=url, backoff_initial_s=0.01),
    )

    async def main_():
        service = CollectorService(cfg, sinks=[sink])
        await service.start()
        try:
            assert await asyncio.to_thread(alerted.wait, 20)
            await asyncio.to_thread(rx.wait_for, 1)
        finally:
            await service.stop()

    run(main_())
    [event] = sink.events
    assert (event.key_id, event.never_sent) == (node.key_id, True)
    body = json.loads(rx.posts[0][1])
    assert (body["kind"], body["key_id"], body["node"]) == ("node_silent", node.key_id, "n")
