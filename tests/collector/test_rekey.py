"""Re-keying a node keeps the accounting right, on every store backend: the revoked key's chain
closes where its last accepted record is (nothing reported missing after it, no liveness watch),
the new key's chain starts at 1 with nothing missing, and every accepted record counts once.
The agent's side (a new key starts a new chain) is tests/agent/spool/test_rekey.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from flopwatch.agent.records import ChainHead
from flopwatch.collector.alerts.liveness import LivenessMonitor
from flopwatch.collector.metrics import register_metrics
from tests.collector.collector_helpers import statuses, totals_of
from tests.nodes import NOW, Node, S, expected_totals


def chains(store) -> dict[str, tuple[int, int, int]]:
    return {c.key_id: (c.held, c.highest, c.missing) for c in store.chain_states()}


def test_revoke_then_a_new_key_starts_its_chain_at_one(store, make_ingestor):
    ingestor = make_ingestor(store)
    old = Node("gpu-1", gpus=2)
    store.enroll(old.public_raw, "gpu-1")
    before = old.envelopes(5)
    assert statuses(ingestor.ingest(before)) == ["accepted"] * 5

    store.revoke(old.key_id)  # step 1 of the procedure
    late = old.envelopes(2)  # signed by the old key after its revocation: refused
    acks = ingestor.ingest(late)
    assert [(a.status, a.reason) for a in acks] == [("rejected", "revoked_key")] * 2

    # Steps 2-3: the node's agent makes a new key (its chain starts at 1) and is enrolled.
    new = Node("gpu-1", gpus=2, start_ns=old.t)  # the same GPUs, from where the old key stopped
    store.enroll(new.public_raw, "gpu-1")
    after = new.envelopes(3)
    assert statuses(ingestor.ingest(after)) == ["accepted"] * 3

    assert chains(store) == {old.key_id: (5, 5, 0), new.key_id: (3, 3, 0)}
    assert {c.key_id: c.missing for c in ingestor.snapshot().chains} == {
        old.key_id: 0,
        new.key_id: 0,
    }
    assert totals_of(store) == expected_totals([old, new], before + after)
    # Liveness watches the new key only: the revoked one is never reported silent.
    monitor = LivenessMonitor(store, [], silent_after_s=60, now_ns=lambda: NOW + 3600 * S)
    assert [e.key_id for e in monitor.check()] == [new.key_id]


def test_continuing_the_old_numbers_under_a_new_key_reads_as_missing_records(store, make_ingestor):
    """Why the agent restarts at 1: the collector reads a chain per key, so a new key that
    goes on at the old key's next number has every number below it missing, for good."""
    ingestor = make_ingestor(store)
    old = Node("gpu-1")
    store.enroll(old.public_raw, "gpu-1")
    ingestor.ingest(old.envelopes(5))
    store.revoke(old.key_id)
    new = Node("gpu-1", start_ns=old.t)
    new.builder = new.new_builder(ChainHead(sequence=5, digest=bytes(32)))
    store.enroll(new.public_raw, "gpu-1")
    assert statuses(ingestor.ingest(new.envelopes(2))) == ["accepted"] * 2
    assert chains(store)[new.key_id] == (2, 7, 5)


def test_the_missing_records_gauge_of_a_re_keyed_node(store, make_ingestor):
    ingestor = make_ingestor(store)
    old, new = Node("gpu-1"), Node("gpu-1")
    store.enroll(old.public_raw, "gpu-1")
    ingestor.ingest(old.envelopes(3))
    store.revoke(old.key_id)
    new.t = old.t
    store.enroll(new.public_raw, "gpu-1")
    ingestor.ingest(new.envelopes(2))
    registry = CollectorRegistry()
    register_metrics(registry, ingestor.snapshot, (10**30,))
    for node in (old, new):
        labels = {"key_id": node.key_id, "node": "gpu-1"}
        assert registry.get_sample_value("flopwatch_node_missing_records", labels) == 0
