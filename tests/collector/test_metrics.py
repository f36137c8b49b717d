"""Prometheus metrics, read back from a fresh registry per test."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from flopwatch.attestation import parse_payload
from flopwatch.collector.alerts.webhook import WebhookStats
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from tests.nodes import T0, Node, expected_totals

# The scrape's clock: an hour after the test nodes' records begin, so their jobs are recently
# active (--metrics-recent) whatever the real clock says.
SCRAPE_NS = T0 + 3600 * 10**9


def test_metrics_show_totals_thresholds_counters_and_missing(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(4)
    per_record = expected_totals([node], envs[:1])[node.job][1]
    thresholds = (per_record, 10**30)
    ingestor = make_ingestor(store, thresholds=thresholds)
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, thresholds, now_ns=lambda: SCRAPE_NS)
    assert registry.get_sample_value("flopwatch_records_accepted_total") == 0

    ingestor.ingest([envs[0], envs[2], envs[2], b"junk"])

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    totals = expected_totals([node], [envs[0], envs[2]])[node.job]
    assert value("flopwatch_job_flops_total", job_id=node.job) == float(totals[0])
    assert value("flopwatch_job_flops_upper_total", job_id=node.job) == float(totals[1])
    assert value("flopwatch_job_threshold_crossed", job_id=node.job, threshold=str(per_record)) == 1
    assert value("flopwatch_job_threshold_crossed", job_id=node.job, threshold=str(10**30)) == 0
    assert value("flopwatch_records_accepted_total") == 2
    assert value("flopwatch_records_duplicate_total") == 1
    assert value("flopwatch_records_rejected_total", reason="malformed") == 1
    assert value("flopwatch_node_missing_records", key_id=node.key_id, node=node.node_id) == 1

    ingestor.ingest([envs[1]])
    assert value("flopwatch_node_missing_records", key_id=node.key_id, node=node.node_id) == 0
    text = generate_latest(registry).decode()
    assert "FLOPs estimate (FLOP model v1)" in text
    assert "Sound upper bound" in text


def test_metrics_after_restart_show_stored_totals(db_path, make_ingestor):
    node = Node()
    store = SQLiteStore(db_path)
    store.enroll(node.public_raw, node.node_id)
    make_ingestor(store).ingest(node.envelopes(2))
    store.close()

    store = SQLiteStore(db_path)
    ingestor = make_ingestor(store)
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, now_ns=lambda: SCRAPE_NS)
    assert registry.get_sample_value("flopwatch_job_flops_total", {"job_id": node.job}) > 0
    assert registry.get_sample_value("flopwatch_records_accepted_total") == 0  # a fresh counter
    store.close()


def test_scrape_does_not_touch_the_store(store, make_ingestor):
    """A scrape from another thread works although the store's connection is this thread's."""
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    ingestor.ingest(node.envelopes(1))
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, now_ns=lambda: SCRAPE_NS)
    out: list[bytes] = []
    scraper = threading.Thread(target=lambda: out.append(generate_latest(registry)))
    scraper.start()
    scraper.join()
    assert b"flopwatch_records_accepted_total 1.0" in out[0]


def interval_sums(node: Node, envelopes) -> dict[str, list[int]]:
    """gpu uuid -> [estimate, upper], summed over the envelopes' intervals (whole-GPU figures)."""
    out: dict[str, list[int]] = {}
    for data in envelopes:
        att = parse_payload(Envelope.from_bytes(data).payload)
        for iv in att.intervals:
            s = out.setdefault(att.gpus[iv.gpu].uuid, [0, 0])
            s[0] += iv.flops_estimate
            s[1] += iv.flops_upper
    return out


def test_gpu_totals_are_whole_gpu_sums_per_node_and_gpu(store, make_ingestor):
    node = Node("node-g", gpus=2)
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(3)
    ingestor = make_ingestor(store)
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, now_ns=lambda: SCRAPE_NS)
    ingestor.ingest(envs[:2])
    ingestor.ingest(envs[2:])

    expected = interval_sums(node, envs)
    assert len(expected) == 2
    for gpu, (estimate, upper) in expected.items():
        # dcgm-exporter's label names too, for PromQL joins with GPU dashboards
        labels = {"node": "node-g", "gpu": gpu, "Hostname": "node-g", "UUID": gpu}
        assert registry.get_sample_value("flopwatch_gpu_flops_total", labels) == float(estimate)
        assert registry.get_sample_value("flopwatch_gpu_flops_upper_total", labels) == float(upper)
    stored = {g.gpu: [g.flops_estimate, g.flops_upper] for g in store.gpu_totals()}
    assert stored == expected  # exact in the store
    assert {g.gpu_intervals for g in store.gpu_totals()} == {3}

    # After a restart the view starts from the store.
    registry2 = CollectorRegistry()
    register_metrics(registry2, make_ingestor(store).snapshot, now_ns=lambda: SCRAPE_NS)
    gpu, (estimate, _) = next(iter(expected.items()))
    labels = {"node": "node-g", "gpu": gpu, "Hostname": "node-g", "UUID": gpu}
    assert registry2.get_sample_value("flopwatch_gpu_flops_total", labels) == float(estimate)
    text = generate_latest(registry2).decode()
    assert "HELP flopwatch_gpu_flops_total FLOPs estimate (FLOP model v1)" in text
    assert "HELP flopwatch_gpu_flops_upper_total Sound upper bound" in text


def test_threshold_gauges_forks_and_webhook_counters(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    thresholds = (10**23, 10**26)
    ingestor = make_ingestor(store, thresholds=thresholds)
    registry = CollectorRegistry()
    stats = WebhookStats(delivered=4, failed=1, dropped=0, retries=6)
    register_metrics(
        registry, ingestor.snapshot, thresholds, webhook=lambda: stats, now_ns=lambda: SCRAPE_NS
    )
    ingestor.ingest(node.envelopes(1))

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    assert value("flopwatch_alert_threshold_flops", threshold=str(10**23)) == 1e23
    assert value("flopwatch_alert_threshold_flops", threshold=str(10**26)) == 1e26
    labels = {"key_id": node.key_id, "node": node.node_id}
    assert value("flopwatch_chain_forks_total", **labels) == 0  # present before any fork
    ingestor.ingest([node.envelope(builder=node.new_builder())])
    assert value("flopwatch_chain_forks_total", **labels) == 1
    assert value("flopwatch_alert_notifications_total", sink="webhook", result="delivered") == 4
    assert value("flopwatch_alert_notifications_total", sink="webhook", result="failed") == 1
    assert value("flopwatch_alert_notification_retries_total", sink="webhook") == 6
