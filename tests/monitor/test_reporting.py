"""The monitor's alerts and problems reach a signed webhook and Prometheus metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from flopwatch.monitor import events
from flopwatch.monitor.config import MonitorConfig
from flopwatch.monitor.metrics import register
from flopwatch.monitor.service import Monitor
from flopwatch.monitor.totals import parse_threshold
from flopwatch.monitor.webhook import MonitorWebhook
from flopwatch.webhook_delivery import DeliveryLimits
from flopwatch.webhook_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.collector.webhook_receiver import serve_receiver
from tests.monitor.monitor_helpers import ServedLog
from tests.nodes import Node, expected_totals

SECRET = b"monitor-webhook-secret-0123"


def test_alerts_and_problems_are_posted_signed_and_counted_in_metrics(tmp_path: Path) -> None:
    log = ServedLog("a.example/log")
    node, stranger = Node("n1"), Node("n2")
    envs = node.envelopes(3)
    log.add([*envs, stranger.envelope()])
    log.publish()
    upper = expected_totals([node], envs)["slurm:c/1"][1]
    with serve_receiver() as (rx, url):
        hook = MonitorWebhook(url, secret=SECRET, limits=DeliveryLimits(backoff_initial_s=0.01))
        config = MonitorConfig(
            logs=(log.log_config("a", tmp_path, [node]),),
            state=tmp_path / "m.db",
            thresholds=(parse_threshold(f"entity:{upper}"),),
        )
        m = Monitor(config, webhook=hook)
        try:
            m.catch_up()
            rx.wait_for(2)
            registry = CollectorRegistry()
            register(registry, m.snapshot, max_totals=10)
            sample = registry.get_sample_value
            assert sample("flopwatch_monitor_log_size", {"log": "a"}) == 4
            assert sample("flopwatch_monitor_log_position", {"log": "a"}) == 3
            labels = {"log": "a", "outcome": "counted"}
            assert sample("flopwatch_monitor_entries_total", labels) == 3
            labels = {"log": "a", "reason": events.UNKNOWN_NODE_KEY}
            assert sample("flopwatch_monitor_problems_total", labels) == 1
            labels = {"kind": "entity", "key": "a:", "figure": "upper"}
            assert sample("flopwatch_monitor_total_flops", labels) == float(upper)
            assert sample("flopwatch_monitor_alerts_total") == 1
        finally:
            m.close()
            hook.close()
            log.close()
    bodies = []
    for headers, body in rx.posts:
        assert verify_signature(
            SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], now_s=time.time()
        )
        bodies.append(json.loads(body))
    kinds = sorted((b["kind"], b.get("reason") or b.get("total_kind")) for b in bodies)
    assert kinds == [("log_problem", events.UNKNOWN_NODE_KEY), ("threshold_crossed", "entity")]
    alert = next(b for b in bodies if b["kind"] == "threshold_crossed")
    assert alert["flops_upper"] == str(upper) and alert["key"] == "a:"
