"""Keys awaiting approval are bounded and removable: a client holding any certificate cannot
register keys without end (the reported flood: 500 fake pending keys under one node name in a
second). Runs on SQLite and PostgreSQL: the bounds are counted in the store."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.enrollment import NOTE_AGAIN_S, Presented, TokenRedeemer
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.metrics import register_metrics
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey, key_id_of_raw, public_raw
from tests.nodes import NOW, Node, S

LIMITS = PendingKeyLimits(max_per_node=3, max_total=5, max_new_per_minute=4)


def raw() -> bytes:
    return public_raw(SigningKey.generate().public_key)


def note(store, node: str, limits: PendingKeyLimits = LIMITS) -> tuple[bytes, bool]:
    key = raw()
    return key, store.note_pending_key(key, node, limits)


def test_per_node_bound(clocked_store, clock):
    assert [note(clocked_store, "gpu-1")[1] for _ in range(4)] == [True, True, True, False]
    clock.ns += 120 * S  # past the per-minute window: only the node's bound is in the way
    assert note(clocked_store, "gpu-1")[1] is False
    assert note(clocked_store, "gpu-2")[1] is True
    assert sorted(p.node_id for p in clocked_store.pending_keys()) == ["gpu-1"] * 3 + ["gpu-2"]


def test_overall_bound_and_new_keys_per_minute(clocked_store, clock):
    noted = []
    for i in range(5):
        noted.append(note(clocked_store, f"gpu-{i}")[1])
    assert noted == [True] * 4 + [False]  # four new keys in one minute
    clock.ns += 61 * S
    assert note(clocked_store, "gpu-4")[1] is True  # the fifth, in the next minute
    clock.ns += 61 * S
    assert note(clocked_store, "gpu-5")[1] is False  # five pending in all
    assert len(clocked_store.pending_keys()) == 5


def test_a_noted_key_is_refreshed_whatever_the_bounds(clocked_store, clock):
    keys = [note(clocked_store, "gpu-1")[0] for _ in range(3)]
    clock.ns += 90 * S
    full = PendingKeyLimits(max_per_node=3, max_total=3, max_new_per_minute=0)
    assert clocked_store.note_pending_key(keys[0], "gpu-1", full) is True
    seen = {p.public_key: p.last_seen_ns for p in clocked_store.pending_keys()}
    assert seen[keys[0]] == NOW + 90 * S and seen[keys[1]] == NOW
    # ...but moving to a node that has no room is refused, and changes nothing.
    roomy = PendingKeyLimits(max_per_node=3, max_total=100, max_new_per_minute=100)
    assert [note(clocked_store, "gpu-2", roomy)[1] for _ in range(3)] == [True] * 3
    assert clocked_store.note_pending_key(keys[0], "gpu-2", roomy) is False
    assert {p.public_key: p.node_id for p in clocked_store.pending_keys()}[keys[0]] == "gpu-1"


def test_removed_keys_make_room_and_enrolled_keys_are_not_removed(clocked_store, clock):
    keys = [note(clocked_store, "gpu-1")[0] for _ in range(3)]
    assert note(clocked_store, "gpu-1")[1] is False
    enrolled = clocked_store.enroll(keys[0], "gpu-1")
    ids = [key_id_of_raw(k) for k in keys]
    assert clocked_store.remove_pending_keys([*ids, "0" * 64]) == 2  # not the enrolled one
    assert clocked_store.pending_keys() == []
    assert clocked_store.node(enrolled).status == "enrolled"
    clock.ns += 61 * S
    assert note(clocked_store, "gpu-1")[1] is True


def test_a_flood_of_keys_under_one_node_name_stays_bounded(clocked_store, make_ingestor):
    """The reported attack, through the ingestor: records signed by 500 fresh keys, each
    presented. All are answered retry (a real node among them loses nothing); at most
    `max_per_node` keys are noted; the refusals are counted and logged once, not 500 times."""
    ingestor = make_ingestor(clocked_store)
    ingestor.enrollment = TokenRedeemer(clocked_store, pending=LIMITS, clock=lambda: 0.0)
    fakes = [Node("gpu-017") for _ in range(500)]
    acks = []
    logger = logging.getLogger("flopwatch.collector.enrollment")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        for n in fakes:
            acks += ingestor.ingest([n.envelope()], presented_key=n.public_raw)
    finally:
        logger.removeHandler(handler)
    assert {(a.status, a.reason) for a in acks} == {("retry", "unknown_key")}
    assert "at their limit" in acks[-1].detail and "awaits approval" in acks[0].detail
    assert len(clocked_store.pending_keys()) == LIMITS.max_per_node
    assert ingestor.enrollment.stats.pending_refused == 500 - LIMITS.max_per_node
    refused_lines = [r for r in records if "not noted as awaiting approval" in r.getMessage()]
    assert len(refused_lines) == 1
    assert len(records) <= LIMITS.max_per_node + 1


def test_a_key_is_written_again_only_after_a_while(clocked_store, clock):
    """A presented key is noted once per NOTE_AGAIN_S, not per record; a key an operator
    rejected is listed again when it keeps presenting itself."""
    now = [0.0]
    redeemer = TokenRedeemer(clocked_store, pending=LIMITS, clock=lambda: now[0])
    node = Node("gpu-3")
    assert redeemer.note_unknown(_env(node), node.public_raw) is Presented.AWAITS
    clocked_store.remove_pending_keys([node.key_id])
    assert redeemer.note_unknown(_env(node), node.public_raw) is Presented.AWAITS
    assert clocked_store.pending_keys() == []  # remembered: no store write
    now[0] += NOTE_AGAIN_S
    clock.ns += 10 * S
    assert redeemer.note_unknown(_env(node), node.public_raw) is Presented.AWAITS
    [pending] = clocked_store.pending_keys()
    assert pending.key_id == node.key_id and pending.last_seen_ns == NOW + 10 * S


def _env(node: Node) -> Envelope:
    return Envelope.from_bytes(node.envelope())


def test_refusals_are_exported_by_claimed_node_with_bounded_labels(clocked_store):
    """flopwatch_pending_key_records_refused: per node id the records claim; node ids past
    max_label_values count as 'other', so fake node names cannot grow the metrics."""
    ingestor = Ingestor(
        clocked_store,
        ThresholdPolicy([10**30]),
        [],
        now_ns=lambda: NOW,
        pending_keys=PendingKeyLimits(max_per_node=1, max_total=100, max_new_per_minute=100),
        max_label_values=2,
    )
    for node_id in ["a", "a", "b", "b", "b", "c", "c", "d"]:
        n = Node(node_id)
        [ack] = ingestor.ingest([n.envelope()], presented_key=n.public_raw)
        assert (ack.status, ack.reason) == ("retry", "unknown_key")
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, enrollment=ingestor.enrollment.counts)

    def refused(node: str) -> float | None:
        name = "flopwatch_pending_key_records_refused_total"
        return registry.get_sample_value(name, {"node": node})

    assert (refused("a"), refused("b"), refused("other")) == (1, 2, 1)  # c past the cap
    assert refused("c") is None and refused("d") is None  # d's one key was noted
    assert ingestor.enrollment.counts().pending_refused == 4
    sample = registry.get_sample_value
    assert sample("flopwatch_enrollment_tokens_total", {"result": "enrolled"}) == 0
