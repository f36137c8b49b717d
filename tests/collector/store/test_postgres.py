"""PostgresStore: the Store contract (also run through the shared store tests, see conftest),
versioned migrations, exact NUMERIC sums, restarts, and a server that drops the connection."""

from __future__ import annotations

import inspect
import threading

import psycopg
import pytest

from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.postgres import schema as postgres_schema
from flopwatch.collector.store.postgres import writes as postgres_writes
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.errors import StoreError
from tests.collector.collector_helpers import RecordingSink, statuses, totals_of
from tests.nodes import NOW, Node, expected_totals


def _protocol_methods() -> dict[str, inspect.Signature]:
    """Every method of `Store`: its own and those of the narrow protocols it combines."""
    return {
        name: inspect.signature(member)
        for interface in Store.__mro__
        if interface.__module__ == Store.__module__
        for name, member in vars(interface).items()
        if callable(member) and not name.startswith("_")
    }


def test_postgres_store_implements_every_store_method():
    """Catches drift: a method added to the Store protocol but not to PostgresStore."""
    methods = _protocol_methods()
    assert {"commit", "enroll", "job_page", "neighbours", "log_size", "close"} <= methods.keys()
    for name, signature in methods.items():
        assert hasattr(PostgresStore, name), f"PostgresStore lacks Store.{name}"
        assert inspect.signature(getattr(PostgresStore, name)).parameters.keys() == (
            signature.parameters.keys()
        ), f"PostgresStore.{name} differs from Store.{name}"


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def store_name(url: str) -> str:
    """The test schema a URL of the `postgres_url` fixture selects."""
    return url.rsplit("search_path%3D", 1)[1]


@pytest.mark.postgres
def test_schema_is_versioned_and_migrations_run_once(postgres_url):
    PostgresStore(postgres_url).close()
    store = PostgresStore(postgres_url)
    assert store.schema_version() == postgres_schema.SCHEMA_VERSION
    store.close()
    with _admin(postgres_url) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, postgres_schema.SCHEMA_VERSION + 1))
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (versions[-1] + 1,))
    with pytest.raises(StoreError, match="newer than this collector"):
        PostgresStore(postgres_url)


@pytest.mark.postgres
def test_failed_migration_changes_nothing(postgres_url, monkeypatch):
    broken = (*postgres_schema.MIGRATIONS, ("CREATE TABLE later (x INTEGER)", "NOT SQL"))
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", broken)
    monkeypatch.setattr(postgres_schema, "SCHEMA_VERSION", len(broken))
    with pytest.raises(StoreError, match="schema migration"):
        PostgresStore(postgres_url)
    with _admin(postgres_url) as db:
        assert db.execute("SELECT to_regclass('later')").fetchone() == (None,)
        assert db.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)


@pytest.mark.postgres
def test_collectors_starting_at_once_migrate_once(postgres_url):
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.schema_version() for s in opened] == [postgres_schema.SCHEMA_VERSION] * 4
    for s in opened:
        s.close()


@pytest.mark.postgres
def test_flop_sums_are_exact_numerics(postgres_url):
    with _admin(postgres_url) as db:
        PostgresStore(postgres_url).close()
        columns = db.execute(
            "SELECT table_name, column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name IN ('flops_estimate', 'flops_upper', 'threshold', 'value') "
            "ORDER BY 1, 2"
        ).fetchall()
    assert {(c[2], c[3], c[4]) for c in columns} == {("numeric", 40, 0)}
    assert {c[0] for c in columns} >= {"alerts", "gpu_totals", "job_gpus", "job_totals"}


@pytest.mark.postgres
def test_restart_keeps_totals_alerts_and_chains(postgres_url, make_ingestor):
    node = Node()
    envs = node.envelopes(4)
    threshold = expected_totals([node], envs[:1])[node.job][1] * 3 // 2
    store = PostgresStore(postgres_url)
    store.enroll(node.public_raw, node.node_id)
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=(threshold,), sinks=[sink])
    assert statuses(ingestor.ingest([envs[0], envs[1], envs[3]])) == ["accepted"] * 3
    assert [e.threshold for e in sink.events] == [threshold]
    store.close()

    store = PostgresStore(postgres_url)
    sink = RecordingSink()
    ingestor = make_ingestor(store, thresholds=(threshold,), sinks=[sink])
    assert totals_of(store) == expected_totals([node], [envs[0], envs[1], envs[3]])
    [chain] = store.chain_states()
    assert (chain.held, chain.highest, chain.missing) == (3, 4, 1)
    assert statuses(ingestor.ingest([envs[1], envs[2]])) == ["duplicate", "accepted"]
    assert sink.events == []
    assert totals_of(store) == expected_totals([node], envs)
    assert store.job_totals()[0].thresholds_crossed == (threshold,)
    store.close()


@pytest.mark.postgres
def test_failed_write_acks_retry_and_applies_nothing(postgres_url, make_ingestor, monkeypatch):
    store = open_store(postgres_url, now_ns=lambda: NOW, create=True)
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store, thresholds=(1,))
    envs = node.envelopes(3)

    def disk_full(*args, **kwargs):
        raise psycopg.errors.DiskFull("could not extend file: No space left on device")

    # Fail on the last write of the transaction: records, sums and coverage are written.
    monkeypatch.setattr(postgres_writes, "insert_alerts", disk_full)
    acks = ingestor.ingest(envs)

    assert statuses(acks) == ["retry"] * 3
    assert {a.reason for a in acks} == {"store_unavailable"}
    assert store.held_sequences(node.key_id) == []
    assert store.job_totals() == []
    assert store.job_gpus(node.job) == []
    assert store.coverage("GPU-node-a-0", 0, node.t) == []

    monkeypatch.undo()
    assert statuses(ingestor.ingest(envs)) == ["accepted"] * 3
    assert totals_of(store) == expected_totals([node], envs)
    assert len(store.fired_alerts()) == 1
    store.close()


@pytest.mark.postgres
def test_dropped_connection_fails_one_batch_then_reconnects(postgres_url, make_ingestor):
    name = f"victim-{store_name(postgres_url)}"
    store = PostgresStore(f"{postgres_url}&application_name={name}", now_ns=lambda: NOW)
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    envs = node.envelopes(2)
    assert statuses(ingestor.ingest(envs[:1])) == ["accepted"]
    with _admin(postgres_url) as db:  # e.g. a server restart or failover
        killed = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
        assert killed == [(True,)]

    assert statuses(ingestor.ingest(envs[1:])) == ["retry"]
    assert statuses(ingestor.ingest(envs[1:])) == ["accepted"]
    assert totals_of(store) == expected_totals([node], envs)
    store.close()


@pytest.mark.postgres
def test_missing_schema_is_a_store_error(postgres_url):
    other = postgres_url.replace(store_name(postgres_url), "no_such_schema")
    with pytest.raises(StoreError, match="no schema of the search_path exists"):
        PostgresStore(other)


@pytest.mark.postgres
def test_synchronous_commit_off_is_turned_on(postgres_url):
    store = PostgresStore(postgres_url.replace("options=", "options=-csynchronous_commit%3Doff%20"))
    rows = store._rows("read setting", "SHOW synchronous_commit")
    assert rows == [("on",)]
    store.close()
