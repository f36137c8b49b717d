"""SQLiteStore: durable state across restarts, exact big totals, schema versions, node keys."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from flopwatch.collector.store.sqlite import schema as sqlite_schema
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import KeyFileError, StoreError
from flopwatch.verify import RecordVerifier
from tests.collector.collector_helpers import RecordingSink, statuses, totals_of
from tests.nodes import NOW, Node, expected_totals


def test_restart_keeps_totals_alerts_and_chains(db_path, make_ingestor):
    node = Node()
    store = SQLiteStore(db_path)
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(4)
    per_record_upper = expected_totals([node], envs[:1])[node.job][1]
    threshold = per_record_upper * 3 // 2
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=(threshold,), sinks=[sink])
    assert statuses(ingestor.ingest([envs[0], envs[1], envs[3]])) == ["accepted"] * 3
    assert [e.threshold for e in sink.events] == [threshold]
    before = totals_of(store)
    store.close()

    store = SQLiteStore(db_path)
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=(threshold,), sinks=[sink])
    assert totals_of(store) == before
    assert [(a.job_id, a.threshold) for a in store.fired_alerts()] == [(node.job, threshold)]
    [chain] = store.chain_states()
    assert (chain.held, chain.highest, chain.missing) == (3, 4, 1)
    # Still a duplicate after the restart; the missing record fills the hole; no alert again.
    assert statuses(ingestor.ingest([envs[1], envs[2]])) == ["duplicate", "accepted"]
    assert sink.events == []
    assert totals_of(store) == expected_totals([node], envs)
    assert store.chain_states()[0].missing == 0
    assert store.job_totals()[0].thresholds_crossed == (threshold,)
    store.close()


def test_totals_past_two_to_the_64_stay_exact(store, make_ingestor):
    # One record: 8 GPUs, one hour each at full tensor load; a few of them pass 2^64 FLOPs.
    node = Node(gpus=8)
    store.enroll(node.public_raw, node.node_id)
    envs = [node.envelope(seconds=3600.0, busy=1.0) for _ in range(3)]
    expected = expected_totals([node], envs)[node.job]
    assert expected[0] > 2**64 and expected[1] > 2**65

    assert statuses(make_ingestor(store).ingest(envs[:1])) == ["accepted"]
    assert statuses(make_ingestor(store).ingest(envs[1:])) == ["accepted"] * 2

    [total] = store.job_totals()
    assert [total.flops_estimate, total.flops_upper] == expected
    assert sum(g.flops_upper for g in store.job_gpus(node.job)) == expected[1]


def test_schema_is_versioned_and_migrations_run_once(db_path):
    SQLiteStore(db_path).close()
    store = SQLiteStore(db_path)
    assert store.schema_version() == sqlite_schema.SCHEMA_VERSION == len(sqlite_schema.MIGRATIONS)
    store.close()
    db = sqlite3.connect(db_path)
    versions = range(1, sqlite_schema.SCHEMA_VERSION + 1)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(v,) for v in versions]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.execute("INSERT INTO schema_version VALUES (99)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this collector"):
        SQLiteStore(db_path)


def test_a_first_release_database_is_migrated_and_keeps_its_nodes(db_path):
    """A database written by the first schema version opens under the current one."""
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in sqlite_schema.MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    key = bytes(range(32))
    db.execute(
        "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
        "VALUES (?, 'node-a', ?, 'enrolled', 5)",
        (hashlib.sha256(key).hexdigest(), key),
    )
    db.commit()
    db.close()
    store = SQLiteStore(db_path)
    assert store.schema_version() == sqlite_schema.SCHEMA_VERSION
    [node] = store.nodes()
    assert (node.node_id, node.public_key, node.status) == ("node-a", key, "enrolled")
    store.close()


def test_unopenable_database_is_a_store_error(tmp_path):
    (tmp_path / "not-a-db").write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "not-a-db")
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "missing-dir" / "x.db")


def test_enroll_is_idempotent_and_revocation_permanent(store):
    node = Node()
    key_id = store.enroll(node.public_raw, "node-a")
    assert key_id == node.key_id
    assert store.enroll(node.public_raw, "node-a") == key_id
    with pytest.raises(StoreError, match="already enrolled"):
        store.enroll(node.public_raw, "node-b")
    [rec] = store.nodes()
    assert (rec.status, rec.enrolled_at_ns, rec.revoked_at_ns) == ("enrolled", NOW, None)
    assert list(store.trusted_keys()) == [key_id]

    store.revoke(key_id)
    store.revoke(key_id)
    assert store.node_status(key_id) == "revoked"
    assert store.node(key_id).revoked_at_ns == NOW
    assert store.trusted_keys() == {}
    with pytest.raises(StoreError, match="revocation is permanent"):
        store.enroll(node.public_raw, "node-a")
    with pytest.raises(StoreError, match="not enrolled"):
        store.revoke("0" * 64)
    with pytest.raises(KeyFileError):
        store.enroll(b"short", "node-a")
    assert store.node_status("0" * 64) is None


def test_neighbours_report_the_held_chain(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    one, two, three = (node.env() for _ in range(3))
    make_ingestor(store).ingest([one.to_bytes(), three.to_bytes()])

    n = store.neighbours(node.key_id, 2)
    assert (n.same, n.before) == (None, one.digest)
    assert n.after_previous == two.digest  # record 3 names record 2's digest
    assert store.neighbours(node.key_id, 1).same == one.digest
    assert store.held_sequences(node.key_id) == [1, 3]


def test_commit_refuses_overlapping_coverage_and_rolls_back(store, make_ingestor):
    """The store keeps measured time disjoint even if a caller skipped the overlap check."""
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    [rec_a] = ingestor.ingest([node.envelope()])
    assert rec_a.status == "accepted"
    overlapping = node.env(start_ns=node.t - 10**8)
    verified = _verify(node, overlapping)
    with pytest.raises(StoreError, match="overlaps measured time"):
        store.commit([verified], [], NOW)
    assert store.held_sequences(node.key_id) == [1]


def _verify(node, env):
    return RecordVerifier(trusted_keys={node.key_id: node.key.public_key}).verify(env)
