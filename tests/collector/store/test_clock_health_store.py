"""Clock health in the store, on both backends: the latest record of a key answered retry
because its time ran ahead (`note_clock_ahead`) is kept per enrolled key, and the key counts as
clock-ahead until a batch holding one of its records is committed later."""

from __future__ import annotations

import psycopg
import pytest

from flopwatch.collector.store.base import Store
from flopwatch.collector.store.postgres import schema as postgres_schema
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.collector.store.records import ClockNote
from flopwatch.dsse import Envelope
from flopwatch.verify import RecordVerifier
from tests.nodes import NOW, Node, S


def _commit(store: Store, node: Node, at_ns: int) -> None:
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    record = verifier.verify(Envelope.from_bytes(node.envelope()))
    store.commit([record], [], at_ns)


def test_a_key_is_clock_ahead_from_its_note_until_a_later_commit(store: Store) -> None:
    node = Node("node-fast")
    store.enroll(node.public_raw, node.node_id)
    fresh = store.node(node.key_id)
    assert fresh is not None
    assert (fresh.clock_ahead, fresh.clock_ahead_ns, fresh.clock_ahead_at_ns) == (
        False,
        None,
        None,
    )

    store.note_clock_ahead([ClockNote(node.key_id, 400 * S, NOW)])
    noted = store.node(node.key_id)
    assert noted is not None and noted.clock_ahead
    assert (noted.clock_ahead_ns, noted.clock_ahead_at_ns) == (400 * S, NOW)
    assert [n.clock_ahead for n in store.nodes()] == [True]

    _commit(store, node, NOW + S)  # one of its records is accepted later: healthy again
    healed = store.node(node.key_id)
    assert healed is not None and not healed.clock_ahead
    assert healed.clock_ahead_ns == 400 * S  # the observation is kept

    store.note_clock_ahead([ClockNote(node.key_id, 350 * S, NOW + 2 * S)])
    again = store.node(node.key_id)
    assert again is not None and again.clock_ahead and again.clock_ahead_ns == 350 * S


def test_a_note_in_the_batch_of_an_accepted_record_keeps_the_key_ahead(store: Store) -> None:
    """Same clock reading for both: the record ahead came with (after) the accepted one."""
    node = Node("node-fast")
    store.enroll(node.public_raw, node.node_id)
    _commit(store, node, NOW)
    store.note_clock_ahead([ClockNote(node.key_id, 301 * S, NOW)])
    held = store.node(node.key_id)
    assert held is not None and held.clock_ahead


def test_an_older_note_is_ignored_and_keys_not_enrolled_are_skipped(store: Store) -> None:
    fast, revoked, stranger = Node("fast"), Node("gone"), Node("stranger")
    store.enroll(fast.public_raw, fast.node_id)
    store.enroll(revoked.public_raw, revoked.node_id)
    store.revoke(revoked.key_id)

    store.note_clock_ahead(
        [
            ClockNote(fast.key_id, 500 * S, NOW),
            ClockNote(revoked.key_id, 500 * S, NOW),
            ClockNote(stranger.key_id, 500 * S, NOW),
        ]
    )
    store.note_clock_ahead([ClockNote(fast.key_id, 900 * S, NOW - S)])  # another collector, late

    by_node = {n.node_id: n for n in store.nodes()}
    assert set(by_node) == {"fast", "gone"}
    assert (by_node["fast"].clock_ahead_ns, by_node["fast"].clock_ahead_at_ns) == (500 * S, NOW)
    assert not by_node["gone"].clock_ahead and by_node["gone"].clock_ahead_ns is None
    store.note_clock_ahead([])  # nothing to note: no error


@pytest.mark.postgres
def test_a_first_release_postgres_schema_is_migrated_with_no_clock_noted(postgres_url) -> None:
    """A PostgreSQL schema of migration 1 (before clock health) opens and keeps its nodes."""
    key = Node("node-a")
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for statement in postgres_schema.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute(
            "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
            "VALUES (%s, 'node-a', %s, 'enrolled', 5)",
            (key.key_id, key.public_raw),
        )
    store = PostgresStore(postgres_url, now_ns=lambda: NOW)
    try:
        assert store.schema_version() == postgres_schema.SCHEMA_VERSION
        [node] = store.nodes()
        assert (node.node_id, node.clock_ahead, node.clock_ahead_ns) == ("node-a", False, None)
        store.note_clock_ahead([ClockNote(key.key_id, 400 * S, NOW)])
        assert store.nodes()[0].clock_ahead
    finally:
        store.close()
