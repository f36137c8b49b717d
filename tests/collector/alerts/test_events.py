"""Threshold alerts: the pure policy, firing once per (job, threshold) ever, and the log sink."""

from __future__ import annotations

import logging

import pytest

from flopwatch.cli.collector_cmd import parse_thresholds
from flopwatch.cli.main import build_parser
from flopwatch.collector.alerts.events import (
    ChainFork,
    LogSink,
    NodeSilent,
    ThresholdPolicy,
    describe,
)
from flopwatch.collector.config import DEFAULT_THRESHOLDS, CollectorConfig
from flopwatch.collector.store.records import AlertEvent, JobTotal, Projection
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError, FlopwatchError
from tests.collector.collector_helpers import RecordingSink, statuses
from tests.nodes import NOW, Node, S, expected_totals


def total(estimate: int, upper: int, span_s: int = 100, crossed=()) -> JobTotal:
    return JobTotal("job", estimate, upper, 0, span_s * S, 7, tuple(crossed))


def test_policy_fires_thresholds_reached_and_not_fired_yet():
    policy = ThresholdPolicy([300, 100, 200], "upper")
    assert policy.thresholds == (100, 200, 300)

    events = policy.evaluate(total(50, 250), at_ns=5)

    assert [(e.threshold, e.value, e.basis, e.at_ns) for e in events] == [
        (100, 250, "upper", 5),
        (200, 250, "upper", 5),
    ]
    # 250 FLOPs over 100 s: 2.5 FLOP/s; 50 more to 300 takes 20 s.
    assert events[0].projected_next == Projection(300, 20.0)
    assert policy.evaluate(total(50, 250, crossed=(100, 200)), at_ns=6) == []


def test_policy_on_the_estimate_basis():
    policy = ThresholdPolicy([100], "estimate")
    assert policy.evaluate(total(99, 10**6), at_ns=0) == []
    [event] = policy.evaluate(total(100, 10**6), at_ns=0)
    assert (event.basis, event.value, event.projected_next) == ("estimate", 100, None)


def test_policy_without_a_measurable_rate_projects_nothing():
    policy = ThresholdPolicy([10, 20])
    [event] = policy.evaluate(total(0, 15, span_s=0), at_ns=0)
    assert event.projected_next is None


@pytest.mark.parametrize(
    ("thresholds", "basis"), [((100,), "max"), ((0,), "upper"), ((-5, 10), "estimate")]
)
def test_policy_refuses_bad_configuration(thresholds, basis):
    with pytest.raises(ConfigError):
        ThresholdPolicy(thresholds, basis)


def test_alert_fires_once_per_job_and_threshold(db_path, make_ingestor):
    node = Node()
    envs = node.envelopes(5)
    per_record = expected_totals([node], envs[:1])[node.job][1]
    # The first is crossed by record 2, the other two together by record 4; none after.
    thresholds = (per_record * 3 // 2, per_record * 7 // 2, per_record * 15 // 4)
    store = SQLiteStore(db_path)
    store.enroll(node.public_raw, node.node_id)
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=thresholds, sinks=[sink])

    ingestor.ingest(envs[:1])
    assert sink.events == []
    ingestor.ingest(envs[1:2])
    assert [e.threshold for e in sink.events] == [thresholds[0]]
    first = sink.events[0]
    assert first.value == 2 * per_record
    assert first.projected_next is not None
    assert first.projected_next.threshold == thresholds[1]
    assert first.projected_next.seconds == pytest.approx(1.5, rel=1e-6)  # 1 record per second
    ingestor.ingest(envs[2:4])
    assert [e.threshold for e in sink.events] == list(thresholds)
    store.close()

    store = SQLiteStore(db_path)  # restart
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=thresholds, sinks=[sink])
    assert statuses(ingestor.ingest(envs[4:])) == ["accepted"]
    assert sink.events == []
    assert [a.threshold for a in store.fired_alerts()] == list(thresholds)
    store.close()


def test_threshold_added_later_fires_on_the_next_commit(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    make_ingestor(store, thresholds=(10**30,)).ingest([node.envelope()])
    sink = RecordingSink()
    make_ingestor(store, thresholds=(1, 10**30), sinks=[sink]).ingest([node.envelope()])
    assert [e.threshold for e in sink.events] == [1]


def test_failing_sink_does_not_undo_the_commit(store, make_ingestor, caplog):
    class BrokenSink:
        def emit(self, event: AlertEvent) -> None:
            raise FlopwatchError("webhook unreachable")

    node = Node()
    store.enroll(node.public_raw, node.node_id)
    after = RecordingSink()
    ingestor = make_ingestor(store, thresholds=(1,), sinks=[BrokenSink(), after])
    with caplog.at_level(logging.ERROR):
        assert statuses(ingestor.ingest([node.envelope()])) == ["accepted"]
    assert "alert sink" in caplog.text
    assert len(after.events) == 1
    assert len(store.fired_alerts()) == 1


def test_log_sink_writes_one_structured_line(caplog):
    event = AlertEvent("slurm:c/7", 10**26, "upper", 10**26 + 5, NOW, Projection(10**27, 3600.0))
    with caplog.at_level(logging.WARNING, logger="flopwatch.collector.alerts.events"):
        LogSink().emit(event)
    [record] = caplog.records
    assert "\n" not in record.getMessage()
    assert "job=slurm:c/7" in record.getMessage()
    assert "figure='upper bound'" in record.getMessage()
    assert f"flops={10**26 + 5}" in record.getMessage()
    assert (record.job, record.threshold, record.basis, record.figure, record.flops) == (
        "slurm:c/7",
        10**26,
        "upper",
        "upper bound",
        10**26 + 5,
    )
    assert (record.next_threshold, record.next_in_s) == (10**27, 3600.0)


# -- defaults, node events, forks ---------------------------------------------------------------
def test_default_thresholds_are_four_decades_on_the_upper_bound():
    assert DEFAULT_THRESHOLDS == (10**23, 10**24, 10**25, 10**26)
    assert CollectorConfig().alert_basis == "upper"
    args = build_parser().parse_args(["collector"])
    assert parse_thresholds(args.thresholds) == DEFAULT_THRESHOLDS
    assert args.alert_basis == "upper"
    args = build_parser().parse_args(["collector", "--alert-basis", "estimate"])
    assert args.alert_basis == "estimate"


def test_threshold_alert_description_names_every_figure():
    about = describe(AlertEvent("j", 10**24, "estimate", 10**24 + 1, NOW, None))
    assert about["kind"] == "threshold_crossed"
    assert (about["figure"], about["flops"], about["threshold_flops"]) == (
        "estimate",
        str(10**24 + 1),
        str(10**24),
    )
    assert about["next_in_seconds"] is None and about["next_at"] is None
    assert "FLOPs estimate 1.0000e+24" in str(about["summary"])


def test_log_sink_writes_node_events_as_one_line(caplog):
    silent = NodeSilent("ab" * 32, "gpu-9", NOW - 400 * S, False, 300.0, NOW)
    fork = ChainFork("cd" * 32, "gpu-8", 5, "a different record #5", NOW)
    with caplog.at_level(logging.WARNING, logger="flopwatch.collector.alerts.events"):
        LogSink().emit(silent)
        LogSink().emit(fork)
    first, second = caplog.records
    assert first.getMessage().startswith("node silent: node gpu-9 (key abababababababab)")
    assert "400 s ago (alerting after 300 s)" in first.getMessage()
    assert (first.kind, first.node, first.silent_seconds) == ("node_silent", "gpu-9", 400.0)
    assert second.getMessage().startswith("chain fork: node gpu-8")
    assert (second.kind, second.sequence) == ("chain_fork", 5)
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_forks_are_refused_counted_and_alerted_once_per_key(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    sink = RecordingSink()
    ingestor = make_ingestor(store, sinks=[sink])
    assert statuses(ingestor.ingest(node.envelopes(2))) == ["accepted", "accepted"]
    rogue = node.new_builder()  # a second chain under the same key: sequence 1 again
    forks = [node.envelope(builder=rogue), node.envelope(builder=rogue)]

    acks = ingestor.ingest(forks[:1]) + ingestor.ingest(forks[1:])

    assert [(a.status, a.reason) for a in acks] == [("rejected", "chain_fork")] * 2
    [event] = sink.events
    assert isinstance(event, ChainFork)
    assert (event.key_id, event.node_id, event.sequence) == (node.key_id, node.node_id, 1)
    assert event.at_ns == NOW
    assert ingestor.snapshot().forks == {(node.key_id, node.node_id): 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nan", "is not a number of FLOPs"),
        ("inf", "is not a number of FLOPs"),
        ("1e40", "must be below 10\\^40 FLOPs"),
        ("1e2000000", "must be below 10\\^40 FLOPs"),  # refused from its exponent, at once
        ("1e-5", "must be a positive whole number"),
    ],
)
def test_thresholds_are_finite_whole_numbers_below_numeric_40(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_thresholds(f"1e23,{text}")
    assert parse_thresholds("9999999999999999999999999999999999999999") == (10**40 - 1,)
