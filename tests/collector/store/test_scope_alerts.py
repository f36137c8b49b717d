"""Run and account threshold alerts through the ingestor, on every backend: a run crosses where
none of its jobs does, an account crosses per window, a forecast fires once (injected clock),
each alert is recorded once and survives a restart without firing again, and the webhook body
names scope, figure and rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.alerts.scopes import ScopedPolicy, parse_rules
from flopwatch.collector.alerts.webhook import WebhookSink
from flopwatch.collector.config import WebhookConfig
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.lineage import declare
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.records import Rule, ScopeAlert
from flopwatch.keys import SigningKey
from flopwatch.runs import WorkloadClass
from tests.collector.collector_helpers import Clock, statuses
from tests.nodes import Node, expected_runs

FINE_TUNING = WorkloadClass.FINE_TUNING


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def ingestor(
    store: Store,
    policy: ScopedPolicy,
    clock: Clock,
    sinks: Sequence[Any] = (),
    job_thresholds: Sequence[int] = (),
) -> Ingestor:
    return Ingestor(
        store,
        ThresholdPolicy(job_thresholds),
        list(sinks),
        now_ns=clock,
        scoped=policy,
        account_windows=(7, 90),  # the records are 30 days before the clock: in 90, not in 7
    )


def restarted_run() -> tuple[list[Node], list[bytes], list[bytes]]:
    """Run llama of account acme: job 1 on node-a, then (a restart) job 2 on node-b; and a
    batch more of job 2."""
    first = Node("node-a", job="slurm:c/1", run="llama", account="acme", gpus=2)
    second = Node("node-b", job="slurm:c/2", run="llama", account="acme", start_ns=first.t)
    envs = [*first.envelopes(2), *second.envelopes(3)]
    return [first, second], envs, second.envelopes(2)


def custom(*thresholds: int) -> tuple[Rule, ...]:
    return parse_rules(",".join(map(str, thresholds)))


def enrolled(store: Store, nodes: list[Node]) -> None:
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)


def test_a_run_crosses_where_no_job_does_and_the_webhook_says_so(store_url, receiver):
    nodes, envs, _ = restarted_run()
    llama = expected_runs(nodes, envs)[("acme", "llama")][1]  # upper bound
    threshold = llama - 1
    store = open_store(store_url, create=True)
    enrolled(store, nodes)
    rx, url = receiver
    sink = Sink()
    webhook = WebhookSink(WebhookConfig(url=url))
    policy = ScopedPolicy(run_rules=custom(threshold), forecast_days=0)
    try:
        ingest = ingestor(store, policy, Clock(), [sink, webhook], job_thresholds=[threshold])
        assert set(statuses(ingest.ingest(envs))) == {"accepted"}
        rx.wait_for(1)
        jobs = store.job_totals()
    finally:
        webhook.close()
        store.close()

    assert len(jobs) == 2 and all(t.flops_upper < threshold for t in jobs)  # no job crossed it
    [alert] = sink.events
    assert isinstance(alert, ScopeAlert)
    assert (alert.scope, alert.account, alert.run, alert.kind) == (
        "run",
        "acme",
        "llama",
        "crossed",
    )
    assert (alert.rule.threshold, alert.value, alert.basis) == (threshold, llama, "upper")
    doc = json.loads(rx.posts[0][1])
    assert (doc["scope"], doc["run"], doc["account"], doc["figure"], doc["rule"]) == (
        "run",
        "llama",
        "acme",
        "upper bound",
        "custom",
    )
    assert (doc["threshold_flops"], doc["flops"]) == (str(threshold), str(llama))


def test_an_account_crosses_in_each_window_that_holds_enough(store_url):
    nodes, envs, _ = restarted_run()
    other = Node("node-c", job="slurm:c/3", run="other", account="acme")
    envs += other.envelopes(1)
    nodes.append(other)
    runs = expected_runs(nodes, envs)
    acme = runs[("acme", "llama")][1] + runs[("acme", "other")][1]
    threshold = runs[("acme", "llama")][1] + 1  # above each run, below their sum
    store = open_store(store_url, create=True)
    enrolled(store, nodes)
    sink = Sink()
    policy = ScopedPolicy(run_rules=custom(threshold), account_rules=custom(threshold))
    try:
        ingest = ingestor(store, policy, Clock(), [sink])
        assert set(statuses(ingest.ingest(envs))) == {"accepted"}
        fired = store.fired_scope_alerts()
    finally:
        store.close()

    # Only the 90-day window holds the records (the clock is 30 days after them); no run crossed.
    [alert] = sink.events
    assert (alert.scope, alert.account, alert.run, alert.window_days) == ("account", "acme", "", 90)
    assert (alert.value, alert.rule.threshold) == (acme, threshold)
    assert fired == [alert]


def test_a_forecast_fires_once_and_no_alert_fires_again_after_a_restart(store_url):
    nodes, envs, more = restarted_run()
    run = expected_runs(nodes, envs)[("acme", "llama")]
    span_s = 3.0  # node-b's 3 s after the same start as node-a's 2 s
    rate = run[1] / span_s
    ahead = run[1] + int(rate * 10 * 86400)  # 10 days away at the run's rate
    far = run[1] + int(rate * 20 * 86400)  # 20 days away: past the 14-day horizon
    policy = ScopedPolicy(
        run_rules=custom(run[1] - 1, ahead, far),
        account_rules=custom(run[1] - 1),
        forecast_days=14,
        forecast_min_span_s=1,
    )
    clock = Clock()
    sink = Sink()
    store = open_store(store_url, now_ns=clock, create=True)
    enrolled(store, nodes)
    try:
        ingest = ingestor(store, policy, clock, [sink])
        assert set(statuses(ingest.ingest(envs))) == {"accepted"}
        first = list(sink.events)
        clock.advance(3600)
        assert set(statuses(ingest.ingest(more[:1]))) == {"accepted"}  # still within 14 days
        assert sink.events == first
    finally:
        store.close()

    kinds = sorted((a.scope, a.kind, a.rule.threshold) for a in first)
    assert kinds == [
        ("account", "crossed", run[1] - 1),
        ("run", "crossed", run[1] - 1),
        ("run", "forecast", ahead),
    ]
    [forecast] = [a for a in first if a.kind == "forecast"]
    assert forecast.rate == rate and abs(forecast.eta_s - 10 * 86400) < 1

    # A restart: what was recorded stays, counted for Prometheus, and fires no second time.
    clock.advance(3600)
    store = open_store(store_url, now_ns=clock, create=True)
    after = Sink()
    try:
        again = ingestor(store, policy, clock, [after])
        assert sum(again.snapshot().scope_alerts.values()) == 3
        assert again.snapshot().scope_alerts[("run", "forecast", "custom", ahead)] == 1
        assert set(statuses(again.ingest(more[1:]))) == {"accepted"}
        assert after.events == []
        held = store.fired_scope_alerts()
    finally:
        store.close()
    assert sorted(held, key=lambda a: a.key) == sorted(first, key=lambda a: a.key)


def test_the_store_records_each_alert_once(store):
    [rule] = custom(10**24)
    a = ScopeAlert("run", "acme", "llama", 0, "crossed", rule, "upper", 10**24 + 7, 5)
    b = ScopeAlert("account", "acme", "", 90, "crossed", rule, "estimate", 10**25, 6)
    f = ScopeAlert("run", "acme", "llama", 0, "forecast", rule, "upper", 10**23, 7, 1e18, 9e5)
    assert store.record_scope_alerts([a, b]) == [a, b]
    assert store.record_scope_alerts([a, f]) == [f]  # a again: already recorded
    assert store.record_scope_alerts([]) == []
    assert store.fired_scope_alerts() == [a, b, f]


def test_a_derived_run_crosses_on_its_cumulative_compute_and_fires_the_eu_rule_once(store_url):
    """llama-ft derives from llama: its thresholds count llama's compute too, and its own
    compute above a third of llama's fires the EU derived-run rule, once, kept in the store."""
    nodes, envs, _ = restarted_run()
    tune = Node("node-c", job="slurm:c/3", run="llama-ft", account="acme")
    tuned = tune.envelopes(4)
    llama = expected_runs(nodes, envs)[("acme", "llama")][1]
    first = expected_runs([tune], tuned[:1])[("acme", "llama-ft")][1]
    own = expected_runs([tune], tuned[:3])[("acme", "llama-ft")][1]
    assert 3 * first <= llama < 3 * own and own < llama  # a third crossed at the third record
    threshold = llama + 1  # above llama alone and llama-ft alone, below their sum
    policy = ScopedPolicy(run_rules=(*parse_rules("eu-ai-act"), *custom(threshold)))
    clock = Clock()
    sink = Sink()
    store = open_store(store_url, now_ns=clock, create=True)
    enrolled(store, [*nodes, tune])
    try:
        ingest = ingestor(store, policy, clock, [sink])
        assert set(statuses(ingest.ingest(envs))) == {"accepted"}
        ft = ("acme", "llama-ft")
        declare(store, SigningKey.generate(), ft, FINE_TUNING, clock(), parent=("acme", "llama"))
        for batch in (tuned[:1], tuned[1:3], tuned[3:]):  # the last: nothing fires again
            assert set(statuses(ingest.ingest(batch))) == {"accepted"}
        held = store.fired_scope_alerts()
    finally:
        store.close()

    assert [(a.run, a.kind, a.rule.threshold, a.value) for a in sink.events] == [
        ("llama-ft", "crossed", threshold, llama + first),
        ("llama-ft", "derived", 0, own),
    ]
    derived = sink.events[1]
    assert derived.parent_value == llama and derived.rule.name == "eu-ai-act"
    assert sorted(held, key=lambda a: a.key) == sorted(sink.events, key=lambda a: a.key)
