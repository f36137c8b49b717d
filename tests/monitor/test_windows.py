"""Rolling windows per account and entity in the monitor: UTC-day buckets by each record's own
time, summed over the trailing windows through today; thresholds on a window fire once; the
buckets survive a restart without counting twice; days no window reaches are not kept; the
windows are in the --once output and in the metrics, bounded per kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.registry import CollectorRegistry

from flopwatch.cli.monitor_cmd import _print
from flopwatch.errors import ConfigError
from flopwatch.monitor.labels import Entities
from flopwatch.monitor.metrics import register
from flopwatch.monitor.service import Monitor
from flopwatch.monitor.totals import parse_threshold
from flopwatch.monitor.windows import Windows
from flopwatch.verify.sums import DAY_NS
from tests.monitor.monitor_helpers import NOW, ServedLog, monitor
from tests.nodes import Node

TODAY = NOW * 10**9 // DAY_NS  # the monitor helpers' clock


def at(days_ago: int) -> int:
    """A start time `days_ago` UTC days before the monitor's today (an hour into the day)."""
    return (TODAY - days_ago) * DAY_NS + 3600 * 10**9


@pytest.fixture
def log_a() -> Iterator[ServedLog]:
    log = ServedLog("a.example/log")
    yield log
    log.close()


def upper(m: Monitor, job: str) -> int:
    return int(m.state.totals()[("job", job)].flops_upper)


def published(log: ServedLog, *nodes_and_envelopes: tuple[Node, list[bytes]]) -> list[Node]:
    for _, envs in nodes_and_envelopes:
        log.add(envs)
    log.publish()
    return [n for n, _ in nodes_and_envelopes]


def test_windows_sum_the_days_each_record_ran_through_today(
    tmp_path: Path, log_a: ServedLog
) -> None:
    recent = Node("n1", job="recent", account="acme", start_ns=at(0))
    older = Node("n2", job="older", account="acme", start_ns=at(40))
    oldest = Node("n3", job="oldest", account="acme", start_ns=at(200))
    nodes = published(
        log_a,
        (recent, recent.envelopes(2)),
        (older, older.envelopes(2)),
        (oldest, [oldest.envelope()]),
    )
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, nodes)])
    try:
        m.catch_up()
        w30, w90, w365 = m.ledger.window_totals("account", "a:acme")
        assert w30.flops_upper == upper(m, "recent")
        assert w90.flops_upper == upper(m, "recent") + upper(m, "older")
        assert w365.flops_upper == upper(m, "recent") + upper(m, "older") + upper(m, "oldest")
        # The entity (unmapped: the account itself) has the same windows.
        assert m.ledger.window_totals("entity", "a:acme") == (w30, w90, w365)
    finally:
        m.close()


def test_an_entity_window_sums_its_accounts_across_logs(tmp_path: Path, log_a: ServedLog) -> None:
    log_b = ServedLog("b.example/log")
    try:
        n1 = Node("n1", job="j1", account="acme", start_ns=at(1))
        n2 = Node("n2", job="j2", account="acme-research", start_ns=at(2))
        published(log_a, (n1, n1.envelopes(2)))
        published(log_b, (n2, n2.envelopes(2)))
        entities = Entities({"a:acme": "Acme", "b:acme-research": "Acme"})
        configs = [log_a.log_config("a", tmp_path, [n1]), log_b.log_config("b", tmp_path, [n2])]
        m = monitor(tmp_path, configs, entities=entities)
        try:
            m.catch_up()
            w30 = m.ledger.window_totals("entity", "Acme")[0]
            assert w30.flops_upper == upper(m, "j1") + upper(m, "j2")
        finally:
            m.close()
    finally:
        log_b.close()


def test_a_window_threshold_fires_once_and_buckets_survive_a_restart(
    tmp_path: Path, log_a: ServedLog
) -> None:
    recent = Node("n1", job="recent", account="acme", start_ns=at(0))
    older = Node("n2", job="older", account="acme", start_ns=at(40))
    nodes = published(log_a, (recent, [recent.envelope()]), (older, [older.envelope()]))
    config = log_a.log_config("a", tmp_path, nodes)
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        both = upper(m, "recent") + upper(m, "older")
        before = m.ledger.window_totals("account", "a:acme")
    finally:
        m.close()
    # Every record here counts the same: r FLOPs. Threshold 2r + 1: after one more recent record
    # the last 90 days hold 3r (fires), the last 30 days 2r (does not).
    windows = Windows().days
    limit = both + 1
    thresholds = [parse_threshold(f"account@{n}:{limit}", windows) for n in (30, 90)]
    m = monitor(tmp_path, [config], thresholds=thresholds)
    try:
        # Restarted: the same buckets (nothing counted twice).
        assert m.ledger.window_totals("account", "a:acme") == before
        log_a.add([recent.envelope()])
        log_a.publish()
        m.catch_up()
        assert m.state.fired() == {(f"account@90:{limit}:upper", "account", "a:acme")}
        # Another recent record: the 30-day window reaches 3r and fires; the 90-day one, past
        # its threshold already, does not fire again.
        log_a.add([recent.envelope()])
        log_a.publish()
        m.catch_up()
        assert m.alerts_fired == 2
        assert {t for t, _, _ in m.state.fired()} == {
            f"account@30:{limit}:upper",
            f"account@90:{limit}:upper",
        }
    finally:
        m.close()


def test_days_no_window_reaches_are_not_kept(tmp_path: Path, log_a: ServedLog) -> None:
    old = Node("n1", job="old", account="acme", start_ns=at(40))
    new = Node("n2", job="new", account="acme", start_ns=at(3))
    ahead = Node("n3", job="ahead", account="acme", start_ns=at(-31))  # past today + 30 days
    nodes = published(
        log_a, (old, [old.envelope()]), (new, [new.envelope()]), (ahead, [ahead.envelope()])
    )
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, nodes)], windows=Windows((30,), 30))
    try:
        m.catch_up()
        assert set(m.state.days()[("account", "a:acme")]) == {TODAY - 3}
        assert m.ledger.window_totals("account", "a:acme")[0].flops_upper == upper(m, "new")
        # Still in the all-time totals.
        assert {("job", "old"), ("job", "ahead")} <= set(m.state.totals())
    finally:
        m.close()


def test_windows_are_in_the_metrics_bounded_per_kind(tmp_path: Path, log_a: ServedLog) -> None:
    big = Node("n1", job="big", account="big", start_ns=at(0))
    small = Node("n2", job="small", account="small", start_ns=at(0))
    nodes = published(log_a, (big, big.envelopes(3)), (small, [small.envelope()]))
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, nodes)], max_metric_totals=1)
    try:
        m.catch_up()
        registry = CollectorRegistry()
        register(registry, m.snapshot, max_totals=1)
        sample = registry.get_sample_value
        labels = {"kind": "account", "key": "a:big", "days": "30", "figure": "upper"}
        assert sample("flopwatch_monitor_window_flops", labels) == float(upper(m, "big"))
        labels["key"] = "a:small"
        assert sample("flopwatch_monitor_window_flops", labels) is None  # past the bound
    finally:
        m.close()


def test_a_window_threshold_names_a_kept_window_of_an_account_or_entity() -> None:
    assert parse_threshold("entity@90:5e25:estimate", (30, 90)).window == 90
    for bad in ("run@30:1e25", "account@7:1e25", "account@x:1e25"):
        with pytest.raises(ConfigError, match="window"):
            parse_threshold(bad, (30, 90))


def test_the_once_output_shows_the_windows(
    tmp_path: Path, log_a: ServedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    n1 = Node("n1", job="j1", account="acme", start_ns=at(0))
    published(log_a, (n1, [n1.envelope()]))
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [n1])])
    try:
        m.catch_up()
        _print(m, as_json=True)
        out = json.loads(capsys.readouterr().out)
        rows = {(w["kind"], w["key"], w["days"]): w for w in out["windows"]}
        assert rows[("account", "a:acme", 30)]["flops_upper"] == str(upper(m, "j1"))
        assert set(rows) == {(k, "a:acme", n) for k in ("account", "entity") for n in (30, 90, 365)}
    finally:
        m.close()
