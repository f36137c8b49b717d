"""Time, through the ingest path on both backends: a record ahead of the collector's clock by
more than the allowed skew is answered retry (kept by the agent, accepted once its time comes),
counted per node and alerted once per episode; a record implausibly old is refused."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from flopwatch.collector.alerts.clocks import NOTE_EVERY_S, ClockAhead
from flopwatch.collector.alerts.events import ThresholdPolicy, describe
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.query import NodeSummary, Query
from flopwatch.collector.store.base import Store
from flopwatch.errors import StoreError
from flopwatch.limits import DEFAULT_LIMITS
from tests.collector.collector_helpers import statuses, totals_of
from tests.nodes import NOW, Node, S, expected_totals

SKEW_S = DEFAULT_LIMITS.max_clock_skew_ns // S
DAY = 86400 * S


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Events:
    def __init__(self) -> None:
        self.got: list[object] = []

    def emit(self, event: object) -> None:
        self.got.append(event)

    def clock(self) -> list[ClockAhead]:
        return [e for e in self.got if isinstance(e, ClockAhead)]


def ingestor(store: Store, clock: Clock, events: Events) -> Ingestor:
    return Ingestor(store, ThresholdPolicy([10**30]), [events], now_ns=clock)


def test_a_node_ahead_of_the_clock_is_retried_counted_alerted_and_accepted_in_time(
    store: Store,
) -> None:
    honest = Node("node-a")
    ahead = Node("node-fast", start_ns=NOW + (SKEW_S + 100) * S)
    for n in (honest, ahead):
        store.enroll(n.public_raw, n.node_id)
    clock, events = Clock(NOW), Events()
    ing = ingestor(store, clock, events)
    early, later = ahead.envelope(), ahead.envelope()
    good = honest.envelope()

    acks = ing.ingest([early, good, later])

    assert statuses(acks) == ["retry", "accepted", "retry"]
    assert {a.reason for a in (acks[0], acks[2])} == {"future"}
    assert "clock runs ahead" in acks[0].detail
    assert totals_of(store) == expected_totals([honest], [good])
    assert store.held_sequences(ahead.key_id) == []
    snap = ing.snapshot()
    assert snap.future == {(ahead.key_id, "node-fast"): 2}
    assert snap.clock_ahead == {(ahead.key_id, "node-fast"): SKEW_S + 102}  # the latest
    [alert] = events.clock()
    assert (alert.node_id, alert.allowed_s) == ("node-fast", SKEW_S)
    assert describe(alert)["kind"] == "clock_ahead"

    # The agent sends them again: still ahead, counted, but alerted once per episode.
    assert statuses(ing.ingest([early])) == ["retry"]
    assert len(events.clock()) == 1
    registry = CollectorRegistry()
    register_metrics(registry, ing.snapshot)
    labels = {"key_id": ahead.key_id, "node": "node-fast"}
    assert registry.get_sample_value("flopwatch_records_future_total", labels) == 3
    assert registry.get_sample_value("flopwatch_node_clock_ahead_seconds", labels) > SKEW_S

    # Their time comes: the very records the agent kept are accepted, nothing was lost.
    clock.now = NOW + (SKEW_S + 100) * S
    assert statuses(ing.ingest([early, later])) == ["accepted", "accepted"]
    assert totals_of(store) == expected_totals([honest, ahead], [good, early, later])
    assert ing.snapshot().clock_ahead == {}
    assert registry.get_sample_value("flopwatch_node_clock_ahead_seconds", labels) == 0

    # A new episode alerts again.
    ahead.t = clock.now + (SKEW_S + 10) * S
    assert statuses(ing.ingest([ahead.envelope()])) == ["retry"]
    assert len(events.clock()) == 2


def _listed(store: Store, clock: Clock) -> dict[str, NodeSummary]:
    return {n.node_id: n for n in Query(store, silent_after_s=3600, now_ns=clock).node_page("", 9)}


def test_a_node_ahead_is_unhealthy_in_the_node_list_until_a_record_of_it_is_accepted(
    store: Store,
) -> None:
    """Kept in the store: shown after a restart (a new ingestor) too, and written once per
    episode and then at most every NOTE_EVERY_S, not once per batch."""
    honest = Node("node-a")
    ahead = Node("node-fast", start_ns=NOW + (SKEW_S + 100) * S)
    for n in (honest, ahead):
        store.enroll(n.public_raw, n.node_id)
    clock, events = Clock(NOW), Events()
    early = ahead.envelope()
    assert statuses(ingestor(store, clock, events).ingest([early, honest.envelope()])) == [
        "retry",
        "accepted",
    ]
    listed = _listed(store, clock)
    assert listed["node-fast"].clock_ahead and not listed["node-fast"].healthy
    assert listed["node-fast"].clock_ahead_s == SKEW_S + 101
    assert listed["node-fast"].clock_ahead_at_ns == NOW
    assert not listed["node-a"].clock_ahead and listed["node-a"].healthy

    # The collector restarts: the node is still shown ahead. Its records keep coming back
    # ahead; within NOTE_EVERY_S the store is not written again, after it it is.
    clock.now += S
    ing = ingestor(store, clock, events)
    assert statuses(ing.ingest([early])) == ["retry"]
    assert _listed(store, clock)["node-fast"].clock_ahead_at_ns == NOW + S
    clock.now += 10 * S
    assert statuses(ing.ingest([early])) == ["retry"]
    assert _listed(store, clock)["node-fast"].clock_ahead_at_ns == NOW + S
    clock.now += int(NOTE_EVERY_S) * S
    assert statuses(ing.ingest([early])) == ["retry"]
    noted = _listed(store, clock)["node-fast"]
    assert noted.clock_ahead and noted.clock_ahead_at_ns == clock.now
    assert noted.clock_ahead_s == pytest.approx(SKEW_S + 101 - 11 - NOTE_EVERY_S)

    # Its time comes: accepted, healthy again; the last observation stays on show.
    clock.now = NOW + (SKEW_S + 100) * S
    assert statuses(ing.ingest([early])) == ["accepted"]
    healed = _listed(store, clock)["node-fast"]
    assert not healed.clock_ahead and healed.clock_ahead_s is not None


class _FailingNotes:
    """A store whose clock notes fail (the rest works)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.fail = True

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def note_clock_ahead(self, notes: object) -> None:
        if self.fail:
            raise StoreError("database is locked")
        self._store.note_clock_ahead(notes)  # type: ignore[arg-type]


def test_a_failed_clock_note_is_written_with_the_next_batch(store: Store, caplog) -> None:
    ahead = Node("node-fast", start_ns=NOW + (SKEW_S + 100) * S)
    store.enroll(ahead.public_raw, ahead.node_id)
    flaky = _FailingNotes(store)
    clock = Clock(NOW)
    ing = Ingestor(flaky, ThresholdPolicy([10**30]), [], now_ns=clock)  # type: ignore[arg-type]
    early = ahead.envelope()
    assert statuses(ing.ingest([early])) == ["retry"]  # the record's answer does not change
    assert "cannot note 1 node clock(s) running ahead" in caplog.text
    assert not _listed(store, clock)["node-fast"].clock_ahead

    flaky.fail = False
    clock.now += S
    assert statuses(ing.ingest([early])) == ["retry"]
    assert _listed(store, clock)["node-fast"].clock_ahead


def test_a_record_implausibly_far_in_the_past_is_refused_with_a_reason(store: Store) -> None:
    years_behind = Node("node-old", start_ns=NOW - 5 * 365 * DAY)
    just_within = Node("node-late", start_ns=NOW - 399 * DAY)
    for n in (years_behind, just_within):
        store.enroll(n.public_raw, n.node_id)
    ing = ingestor(store, Clock(NOW), Events())

    acks = ing.ingest([years_behind.envelope(), just_within.envelope()])

    assert statuses(acks) == ["rejected", "accepted"]
    assert acks[0].reason == "too_old"
    assert "1825 days" in acks[0].detail and "400 days" in acks[0].detail
    assert store.held_sequences(years_behind.key_id) == []


def test_a_defect_other_than_its_time_is_refused_for_good_not_retried(store: Store) -> None:
    """ "future" is said last: a record that also fails another check is rejected."""
    ahead = Node("node-fast", start_ns=NOW + (SKEW_S + 100) * S, job="slurm:other/1")
    store.enroll(ahead.public_raw, ahead.node_id)
    [ack] = ingestor(store, Clock(NOW), Events()).ingest([ahead.envelope()])
    assert (ack.status, ack.reason) == ("rejected", "cluster_mismatch")
