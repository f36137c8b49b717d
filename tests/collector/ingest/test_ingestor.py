"""Ingestor: each test sends what an agent (honest, confused or hostile) might, and checks acks
and what the store then holds."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

import pytest

from flopwatch.collector.store.sqlite import writes as sqlite_writes
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import short_key_id
from flopwatch.limits import Limits
from flopwatch.v1 import attestation_pb2 as pb
from tests.collector.collector_helpers import IngestorFactory, statuses, totals_of
from tests.nodes import Node, expected_totals


def test_accepts_records_and_totals_them(store: SQLiteStore, make_ingestor: IngestorFactory):
    node = Node(gpus=2)
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(3)

    acks = make_ingestor(store).ingest(envs)

    assert statuses(acks) == ["accepted"] * 3
    assert [(a.key_id, a.sequence) for a in acks] == [(node.key_id, s) for s in (1, 2, 3)]
    assert totals_of(store) == expected_totals([node], envs)
    [total] = store.job_totals()
    assert total.gpu_intervals == 6
    assert (total.first_start_ns, total.last_end_ns) == (node.t - 3 * 10**9, node.t)
    assert {g.gpu_uuid for g in store.job_gpus(node.job)} == {"GPU-node-a-0", "GPU-node-a-1"}
    assert store.held_sequences(node.key_id) == [1, 2, 3]


def test_duplicate_is_acked_and_changes_nothing(store: SQLiteStore, make_ingestor: IngestorFactory):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    env = node.envelope()
    ingestor = make_ingestor(store)
    assert statuses(ingestor.ingest([env])) == ["accepted"]
    before = totals_of(store)

    assert statuses(ingestor.ingest([env])) == ["duplicate"]
    # Twice in one batch: the second is a duplicate of the first, not yet committed.
    env2 = node.envelope()
    assert statuses(ingestor.ingest([env2, env2])) == ["accepted", "duplicate"]
    assert totals_of(store) == expected_totals([node], [env, env2])
    assert before != totals_of(store)
    snap = ingestor.snapshot()
    assert (snap.accepted, snap.duplicate) == (2, 2)


@pytest.mark.parametrize("one_batch", [False, True])
def test_out_of_order_delivery_is_accepted(
    store: SQLiteStore, make_ingestor: IngestorFactory, one_batch: bool
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    first, second = node.envelopes(2)
    ingestor = make_ingestor(store)

    if one_batch:
        acks = ingestor.ingest([second, first])
    else:
        acks = ingestor.ingest([second])
        assert store.chain_states()[0].missing == 1  # sequence 1 is missing so far
        acks += ingestor.ingest([first])

    assert statuses(acks) == ["accepted", "accepted"]
    assert [a.sequence for a in acks] == [2, 1]
    assert totals_of(store) == expected_totals([node], [first, second])
    assert store.chain_states()[0].missing == 0


def test_fork_is_rejected(store: SQLiteStore, make_ingestor: IngestorFactory, caplog):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    honest = node.envelope()
    # The same key signs a different record 1 (later readings, so only the chain conflicts).
    other = node.envelope(builder=node.new_builder())
    assert statuses(ingestor.ingest([honest])) == ["accepted"]

    with caplog.at_level(logging.ERROR, logger="flopwatch.collector.ingest.ingestor"):
        [ack] = ingestor.ingest([other])

    assert (ack.status, ack.reason, ack.sequence) == ("rejected", "chain_fork", 1)
    assert "chain fork" in caplog.text
    assert totals_of(store) == expected_totals([node], [honest])


@pytest.mark.parametrize("held_first", ["before", "after"])
def test_record_that_does_not_link_with_its_neighbour_is_a_fork(
    store: SQLiteStore, make_ingestor: IngestorFactory, held_first: str
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    one, two = node.envelopes(2)
    other = node.new_builder()  # a second chain under the same key
    other_one = node.envelope(builder=other)
    other_two = node.envelope(builder=other)

    if held_first == "before":  # held 1; a 2 that names another 1
        held, conflicting = one, other_two
    else:  # held 2; a 1 that 2 does not name
        held, conflicting = two, other_one
    assert statuses(ingestor.ingest([held])) == ["accepted"]
    [ack] = ingestor.ingest([conflicting])
    assert (ack.status, ack.reason) == ("rejected", "chain_fork")


def test_tampered_payload_fails_signature(store: SQLiteStore, make_ingestor: IngestorFactory):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    env = node.env()
    payload = bytearray(env.payload)
    payload[-1] ^= 0x01
    tampered = Envelope(bytes(payload), env.payload_type, env.signatures).to_bytes()

    [ack] = make_ingestor(store).ingest([tampered])

    assert (ack.status, ack.reason) == ("rejected", "bad_signature")
    assert store.job_totals() == []


def test_garbage_is_rejected_as_malformed(store: SQLiteStore, make_ingestor: IngestorFactory):
    [ack] = make_ingestor(store).ingest([b"\xff\xff not protobuf"])
    assert (ack.status, ack.reason, ack.key_id, ack.sequence) == ("rejected", "malformed", "", 0)


def test_unknown_key_is_rejected(store: SQLiteStore, make_ingestor: IngestorFactory):
    node = Node()
    [ack] = make_ingestor(store).ingest([node.envelope()])
    assert (ack.status, ack.reason, ack.key_id, ack.sequence) == (
        "rejected",
        "unknown_key",
        node.key_id,
        1,
    )
    assert store.nodes() == []


def test_revoked_key_is_rejected_from_the_next_batch(
    store: SQLiteStore, make_ingestor: IngestorFactory, db_path
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    assert statuses(ingestor.ingest([node.envelope()])) == ["accepted"]

    operator = SQLiteStore(db_path)  # e.g. the CLI, on its own connection
    operator.revoke(node.key_id)
    operator.close()

    [ack] = ingestor.ingest([node.envelope()])
    assert (ack.status, ack.reason) == ("rejected", "revoked_key")
    assert store.node_status(node.key_id) == "revoked"
    assert node.key_id not in store.trusted_keys()


def test_trust_on_first_use_enrolls_a_presented_key(
    store: SQLiteStore, make_ingestor: IngestorFactory, caplog
):
    node = Node(node_id="node-tofu")
    envs = node.envelopes(2)
    ingestor = make_ingestor(store, tofu=True)

    # Without the public key, or with another one, nothing is enrolled.
    assert ingestor.ingest(envs[:1])[0].reason == "unknown_key"
    other = Node().public_raw
    assert ingestor.ingest(envs[:1], presented_key=other)[0].reason == "unknown_key"
    assert ingestor.ingest(envs[:1], presented_key=b"short")[0].reason == "unknown_key"

    with caplog.at_level(logging.WARNING, logger="flopwatch.collector.ingest.ingestor"):
        acks = ingestor.ingest(envs, presented_key=node.public_raw)

    assert statuses(acks) == ["accepted", "accepted"]
    [enrolled] = store.nodes()
    assert (enrolled.key_id, enrolled.node_id, enrolled.status) == (
        node.key_id,
        "node-tofu",
        "enrolled",
    )
    assert f"enrolled key {node.key_id} for node node-tofu" in caplog.text


def test_presented_key_is_ignored_without_trust_on_first_use(
    store: SQLiteStore, make_ingestor: IngestorFactory
):
    node = Node()
    [ack] = make_ingestor(store).ingest([node.envelope()], presented_key=node.public_raw)
    assert ack.reason == "unknown_key"
    assert store.nodes() == []


def test_presented_key_cannot_override_a_revocation(
    store: SQLiteStore, make_ingestor: IngestorFactory
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    store.revoke(node.key_id)
    [ack] = make_ingestor(store, tofu=True).ingest([node.envelope()], presented_key=node.public_raw)
    assert ack.reason == "revoked_key"


def test_same_gpu_time_counted_once_across_keys(store: SQLiteStore, make_ingestor: IngestorFactory):
    # Two agents (two keys) on one node both measure GPU-x over the same seconds.
    a = Node("node-a", gpu_prefix="GPU-x")
    b = Node("node-b", gpu_prefix="GPU-x")
    for n in (a, b):
        store.enroll(n.public_raw, n.node_id)
    ingestor = make_ingestor(store)
    env_a = a.envelope(seconds=2.0)
    env_b = b.envelope(start_ns=a.t - 10**9)  # overlaps a's second second

    assert statuses(ingestor.ingest([env_a])) == ["accepted"]
    [ack] = ingestor.ingest([env_b])
    assert (ack.status, ack.reason) == ("rejected", "overlap")
    # The reason names the key that measured that time first, and its node.
    assert f"already measured by key {short_key_id(a.key_id)} of node 'node-a'" in ack.detail
    # Within one batch as well.
    env_a2 = a.envelope()
    [ok, bad] = ingestor.ingest([env_a2, b.envelope(start_ns=a.t - 10**9)])
    assert (ok.status, bad.reason) == ("accepted", "overlap")
    assert f"by key {short_key_id(a.key_id)} of node 'node-a'" in bad.detail
    assert totals_of(store) == expected_totals([a], [env_a, env_a2])


def test_interval_filling_an_earlier_hole_is_accepted(
    store: SQLiteStore, make_ingestor: IngestorFactory
):
    """Overlap is judged against measured time, not only the latest end per GPU."""
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    t0 = node.t
    later = node.envelope(start_ns=t0 + 5 * 10**9)  # seq 1: seconds 5..6
    hole = node.envelope(start_ns=t0)  # seq 2: seconds 0..1, before the latest end
    again = node.envelope(start_ns=t0 + 5 * 10**9 + 10**8)  # seq 3: inside seconds 5..6

    acks = ingestor.ingest([later]) + ingestor.ingest([hole]) + ingestor.ingest([again])

    assert statuses(acks) == ["accepted", "accepted", "rejected"]
    assert acks[2].reason == "overlap"
    assert store.coverage("GPU-node-a-0", t0, t0 + 10 * 10**9) == [
        (t0, t0 + 10**9),
        (t0 + 5 * 10**9, t0 + 6 * 10**9),
    ]


def test_contiguous_intervals_are_stored_as_one_run(
    store: SQLiteStore, make_ingestor: IngestorFactory
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    t0 = node.t
    envs = node.envelopes(4)
    make_ingestor(store).ingest([envs[3], envs[1]])
    make_ingestor(store).ingest([envs[0], envs[2]])
    assert store.coverage("GPU-node-a-0", t0, node.t) == [(t0, node.t)]


@pytest.mark.sqlite_only  # fails a write of flopwatch.collector.store.sqlite.writes
def test_store_failure_acks_retry_and_applies_nothing(
    store: SQLiteStore, make_ingestor: IngestorFactory, monkeypatch
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store, thresholds=(1,))
    envs = node.envelopes(3)

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    # Fail on the last write of the transaction: records, totals and coverage are written.
    monkeypatch.setattr(sqlite_writes, "insert_alerts", disk_full)
    acks = ingestor.ingest(envs)

    assert statuses(acks) == ["retry"] * 3
    assert {a.reason for a in acks} == {"store_unavailable"}
    assert [a.sequence for a in acks] == [1, 2, 3]
    assert store.held_sequences(node.key_id) == []
    assert store.job_totals() == []
    assert store.coverage("GPU-node-a-0", 0, node.t) == []
    assert ingestor.snapshot().retry == 3

    monkeypatch.undo()
    assert statuses(ingestor.ingest(envs)) == ["accepted"] * 3
    assert totals_of(store) == expected_totals([node], envs)
    assert len(store.fired_alerts()) == 1


def test_large_input_is_committed_in_limited_batches(
    store: SQLiteStore, make_ingestor: IngestorFactory, monkeypatch
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store, limits=Limits(max_commit_batch=2))
    commits = []
    real_commit = store.commit

    def counting_commit(records, alerts, received_at_ns):
        commits.append(len(records))
        return real_commit(records, alerts, received_at_ns)

    monkeypatch.setattr(store, "commit", counting_commit)

    acks = ingestor.ingest(node.envelopes(5))

    assert statuses(acks) == ["accepted"] * 5
    assert commits == [2, 2, 1]


def test_rejections_are_counted_by_reason(store: SQLiteStore, make_ingestor: IngestorFactory):
    node = Node()
    ingestor = make_ingestor(store)
    ingestor.ingest([node.envelope(), b"junk"])
    ingestor.ingest([Node().envelope()])
    assert dict(ingestor.snapshot().rejected) == {"unknown_key": 2, "malformed": 1}


def test_sequence_beyond_the_store_range_is_rejected(
    store: SQLiteStore, make_ingestor: IngestorFactory
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    att = pb.Attestation.FromString(node.env().payload)
    att.sequence = 2**63
    att.previous_digest = b"\x00" * 32
    env = Envelope.sign(att.SerializeToString(), node.key)

    [ack] = make_ingestor(store).ingest([env.to_bytes()])

    assert (ack.status, ack.reason, ack.sequence) == ("rejected", "bad_sequence", 2**63)


def test_record_of_gaps_only_is_accepted(
    store: SQLiteStore, make_ingestor: IngestorFactory, db_path
):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    failed = [replace(r, error="GPM sample failed") for r in node.readings(node.t, 1.0, 0.5)]
    env = node.builder.build(failed, [])

    [ack] = make_ingestor(store).ingest([env.to_bytes()])

    assert ack.status == "accepted"
    assert store.job_totals() == []
    assert store.held_sequences(node.key_id) == [1]
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT sequence, gpu_uuid, reason, detail FROM gaps").fetchall()
    assert rows == [(1, "GPU-node-a-0", "sampling_error", "GPM sample failed")]
