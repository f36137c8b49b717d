"""Prometheus metrics, read back from a fresh registry per test."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from collector.metrics import register_metrics
from collector.sqlite_store import SQLiteStore
from tests.collector.collector_helpers import Node, expected_totals


def test_metrics_show_totals_thresholds_counters_and_missing(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(4)
    per_record = expected_totals([node], envs[:1])[node.job][1]
    thresholds = (per_record, 10**30)
    ingestor = make_ingestor(store, thresholds=thresholds)
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, thresholds)
    assert registry.get_sample_value("flopwatch_records_accepted_total") == 0

    ingestor.ingest([envs[0], envs[2], envs[2], b"junk"])

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    totals = expected_totals([node], [envs[0], envs[2]])[node.job]
    assert value("flopwatch_job_flops_total", job=node.job) == float(totals[0])
    assert value("flopwatch_job_flops_upper_total", job=node.job) == float(totals[1])
    assert value("flopwatch_job_threshold_crossed", job=node.job, threshold=str(per_record)) == 1
    assert value("flopwatch_job_threshold_crossed", job=node.job, threshold=str(10**30)) == 0
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
    register_metrics(registry, ingestor.snapshot)
    assert registry.get_sample_value("flopwatch_job_flops_total", {"job": node.job}) > 0
    assert registry.get_sample_value("flopwatch_records_accepted_total") == 0  # a fresh counter
    store.close()


def test_scrape_does_not_touch_the_store(store, make_ingestor):
    """A scrape from another thread works although the store's connection is this thread's."""
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    ingestor.ingest(node.envelopes(1))
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot)
    out: list[bytes] = []
    scraper = threading.Thread(target=lambda: out.append(generate_latest(registry)))
    scraper.start()
    scraper.join()
    assert b"flopwatch_records_accepted_total 1.0" in out[0]
