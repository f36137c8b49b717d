"""A run's current rate, on every backend: per-run sums per UTC day kept for its last
`RUN_RATE_DAYS` days of measurement (counted from its own last day, not the collector's clock),
`Store.run_recent` over them, forecasts at that rate rather than the run's lifetime average, and
`flopwatch runs`' NEXT column at the same rate."""

from __future__ import annotations

import sqlite3

import psycopg

from flopwatch.cli.runs_cmd import Next
from flopwatch.collector.alerts.scopes import ScopedPolicy
from flopwatch.collector.rpc.query import run_message
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.records import (
    RUN_RATE_DAYS,
    JobDelta,
    Rule,
    RunTotal,
    first_rate_day,
)
from flopwatch.verify import RecordVerifier
from flopwatch.verify.sums import DAY_NS
from tests.collector.collector_helpers import Clock, statuses
from tests.collector.store.test_scope_alerts import Sink, ingestor
from tests.nodes import T0, Node

S = 10**9
KEY = ("acme", "llama")


def slow_then_fast(node: Node) -> list[bytes]:
    """A run measured one second a day for 20 days, then 200 seconds on day 20: it sped up."""
    envs = [node.envelope(start_ns=T0 + d * DAY_NS) for d in range(20)]
    start = T0 + 20 * DAY_NS
    return envs + [node.envelope(start_ns=start + k * S) for k in range(200)]


def window_of(node: Node, envs: list[bytes]) -> JobDelta:
    """The run's sums over its last RUN_RATE_DAYS days, recomputed from the records."""
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    days = {}
    for e in envs:
        for (account, run, day), s in verifier.verify_bytes(e).sums.run_days.items():
            assert (account, run) == KEY
            held = days.get(day)
            days[day] = JobDelta(*s) if held is None else held.plus(JobDelta(*s))
    first = first_rate_day(max(d.last_end_ns for d in days.values()))
    kept = [d for day, d in days.items() if day >= first]
    total = kept[0]
    for d in kept[1:]:
        total = total.plus(d)
    return total


def test_run_recent_holds_the_runs_last_days_only(store: Store, make_ingestor):
    node = Node("node-a", run="llama", account="acme")
    store.enroll(node.public_raw, node.node_id)
    envs = slow_then_fast(node)
    assert set(statuses(make_ingestor(store).ingest(envs))) == {"accepted"}
    want = window_of(node, envs)
    assert store.run_recent([KEY, ("acme", "unknown")]) == {KEY: want}
    # Days 14..20 (7 days): six one-second days and the fast day.
    assert want.gpu_intervals == (RUN_RATE_DAYS - 1) + 200
    assert want.first_start_ns == T0 + 14 * DAY_NS

    # A late record of an old day adds to the run's total, not to its window (it is pruned).
    total = store.runs_for([KEY])[KEY]
    late = node.envelope(start_ns=T0 + 3 * DAY_NS + 10 * S)
    assert statuses(make_ingestor(store).ingest([late])) == ["accepted"]
    assert store.runs_for([KEY])[KEY].gpu_intervals == total.gpu_intervals + 1
    assert store.run_recent([KEY]) == {KEY: want}


def test_a_forecast_uses_the_runs_current_rate_not_its_average(store_url):
    node = Node("node-a", run="llama", account="acme")
    envs = slow_then_fast(node)
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    runs = [verifier.verify_bytes(e).sums.runs[KEY] for e in envs]
    total = sum(r[1] for r in runs)  # upper bound, the policy's basis
    lifetime = total / ((max(r[3] for r in runs) - min(r[2] for r in runs)) / 1e9)
    recent = window_of(node, envs)
    rate = recent.flops_upper / ((recent.last_end_ns - recent.first_start_ns) / 1e9)
    assert rate > 3 * lifetime  # it sped up
    threshold = total + int(rate * 10 * 86400)  # 10 days away now; 30+ at its average
    assert (threshold - total) / lifetime > 14 * 86400
    policy = ScopedPolicy(
        run_rules=(Rule("custom", threshold, "operator's threshold", "custom"),),
        forecast_days=14,
        forecast_min_span_s=1,
    )
    sink = Sink()
    store = open_store(store_url, now_ns=Clock(), create=True)
    try:
        store.enroll(node.public_raw, node.node_id)
        assert set(statuses(ingestor(store, policy, Clock(), [sink]).ingest(envs))) == {"accepted"}
    finally:
        store.close()
    [forecast] = [a for a in sink.events if a.kind == "forecast"]
    assert (forecast.run, forecast.value) == ("llama", total)
    assert forecast.rate == rate
    assert abs(forecast.eta_s - 10 * 86400) < 1


def test_runs_next_column_takes_the_current_rate():
    rule = Rule("custom", 10**20, "operator's threshold", "custom")
    nxt = Next([rule], "upper")
    total = RunTotal("acme", "llama", 1, 10**18, 10**18, T0, T0 + 100 * DAY_NS, 10, 0, 0)
    recent = JobDelta(10**17, 10**17, T0 + 99 * DAY_NS, T0 + 100 * DAY_NS, 5)
    with_recent = nxt.of(run_message(total, None, recent))
    average = nxt.of(run_message(total))
    assert with_recent is not None and average is not None
    assert with_recent[1] == (10**20 - 10**18) / (10**17 / 86400)  # a day's rate
    assert average[1] == (10**20 - 10**18) / (10**18 / (100 * 86400))


def test_each_run_keeps_only_its_last_days(store_url, make_ingestor):
    """However old the days its records bring, a run holds at most RUN_RATE_DAYS rows of days
    (a late record of an old day is deleted in the commit that adds it)."""
    node = Node("node-a", run="llama", account="acme")
    store = open_store(store_url, now_ns=Clock(), create=True)
    try:
        store.enroll(node.public_raw, node.node_id)
        envs = [*slow_then_fast(node), node.envelope(start_ns=T0 + 3 * DAY_NS + 10 * S)]
        assert set(statuses(make_ingestor(store).ingest(envs))) == {"accepted"}
    finally:
        store.close()
    sql = "SELECT day FROM run_days ORDER BY day"
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(store_url.removeprefix("sqlite:")) as db:
            days = [r[0] for r in db.execute(sql)]
    else:
        with psycopg.connect(store_url) as db:
            days = [r[0] for r in db.execute(sql)]
    last = (T0 + 20 * DAY_NS) // DAY_NS
    assert days == list(range(last - RUN_RATE_DAYS + 1, last + 1))
