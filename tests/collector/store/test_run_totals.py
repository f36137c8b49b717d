"""Run and account totals, on every backend: a run across jobs and nodes, accounts, classes,
exactly once under duplicates and failed commits, rolling windows of UTC days and the bound on
days kept, paging, and the upgrade from a database without them."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.postgres import schema as postgres_schema
from flopwatch.collector.store.postgres import writes as postgres_writes
from flopwatch.collector.store.sqlite import schema as sqlite_schema
from flopwatch.collector.store.sqlite import writes as sqlite_writes
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.runs import CLASS_BIT, WorkloadClass, classes_in
from flopwatch.verify import RecordVerifier
from flopwatch.verify.sums import DAY_NS
from tests.collector.collector_helpers import ALL, accounts_of, runs_of, statuses, totals_of
from tests.nodes import NOW, Node, by_account, expected_runs

DAY = 86400 * 10**9


def restarted_run() -> tuple[list[Node], list[bytes]]:
    """One run of account acme that spans two jobs (a restart) on two nodes, a fine-tune of it
    under another name, and a job of no declared run or account."""
    first = Node("node-a", job="slurm:c/1", run="llama", account="acme", gpus=2)
    first.labels["workload_class"] = WorkloadClass.PRETRAINING
    second = Node("node-b", job="slurm:c/2", run="llama", account="acme", start_ns=first.t)
    second.labels["workload_class"] = WorkloadClass.PRETRAINING
    tune = Node("node-c", job="slurm:c/3", run="llama-ft", account="acme")
    tune.labels["workload_class"] = WorkloadClass.FINE_TUNING
    plain = Node("node-d", job="slurm:c/4")
    nodes = [first, second, tune, plain]
    envs = [*first.envelopes(2), *second.envelopes(3), *tune.envelopes(2), *plain.envelopes(1)]
    return nodes, envs


def enrolled(store: Store, nodes: list[Node]) -> None:
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)


def test_runs_and_accounts_total_their_jobs_across_nodes(store, make_ingestor):
    nodes, envs = restarted_run()
    enrolled(store, nodes)
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)

    expected = expected_runs(nodes, envs)
    assert set(expected) == {("acme", "llama"), ("acme", "llama-ft"), ("", "slurm:c/4")}
    assert runs_of(store) == expected
    assert accounts_of(store) == by_account(expected)
    # The run is exactly its two jobs, on two nodes; the jobs' energy and time add up to it.
    jobs = {t.job_id: t for t in store.job_totals()}
    [llama] = store.run_page("acme", "llama", ALL, 1)
    parts = [jobs["slurm:c/1"], jobs["slurm:c/2"]]
    assert llama.flops_upper == sum(j.flops_upper for j in parts)
    assert llama.energy_nj == sum(j.energy_nj for j in parts) > 0
    assert llama.gpu_time_fs == sum(j.gpu_time_fs for j in parts) == 7 * 10**15  # 7 GPU-s
    assert (llama.first_start_ns, llama.last_end_ns) == (
        parts[0].first_start_ns,
        parts[1].last_end_ns,
    )
    assert classes_in(llama.classes) == (WorkloadClass.PRETRAINING,)
    [none, acme] = store.account_page("", None, 10)
    assert (none.account, acme.account) == ("", "acme")  # no account sorts first
    assert (acme.runs, none.runs) == (2, 1)
    assert classes_in(acme.classes) == (WorkloadClass.PRETRAINING, WorkloadClass.FINE_TUNING)
    assert classes_in(none.classes) == (WorkloadClass.UNKNOWN,)


def test_duplicates_and_a_failed_commit_count_nothing_twice(
    store, make_ingestor, backend, monkeypatch
):
    nodes, envs = restarted_run()
    enrolled(store, nodes)
    ingestor = make_ingestor(store)
    assert statuses(ingestor.ingest(envs[:4])) == ["accepted"] * 4
    before = (runs_of(store), accounts_of(store))

    # A commit that fails on its last write applies nothing, runs and accounts included.
    writes = postgres_writes if backend == "postgres" else sqlite_writes
    error = psycopg.errors.DiskFull if backend == "postgres" else sqlite3.OperationalError

    def disk_full(*args, **kwargs):
        raise error("disk full")

    monkeypatch.setattr(writes, "insert_alerts", disk_full)
    assert statuses(ingestor.ingest(envs[4:])) == ["retry"] * 4
    assert (runs_of(store), accounts_of(store)) == before
    monkeypatch.undo()

    # Sent again, with the ones already held: each counted once.
    assert statuses(ingestor.ingest(envs)) == ["duplicate"] * 4 + ["accepted"] * 4
    assert statuses(ingestor.ingest(envs)) == ["duplicate"] * 8
    expected = expected_runs(nodes, envs)
    assert runs_of(store) == expected
    assert accounts_of(store) == by_account(expected)
    today = NOW // DAY_NS  # the records ran 30 days before: in the trailing 31 days
    [windows] = store.account_windows(["acme"], today, [30, 31]).values()
    assert [w.flops_upper for w in windows] == [0, by_account(expected)["acme"][1]]


def _day_node(days_ago: int, job: str) -> Node:
    return Node(f"node-{job}", job=f"slurm:c/{job}", account="acme", start_ns=NOW - days_ago * DAY)


def test_account_windows_sum_the_trailing_utc_days(store, make_ingestor):
    ages = {"5": 5, "50": 50, "200": 200, "380": 380}
    nodes = {name: _day_node(days, name) for name, days in ages.items()}
    enrolled(store, list(nodes.values()))
    envs = {name: n.envelopes(2) for name, n in nodes.items()}
    every = [e for es in envs.values() for e in es]
    assert statuses(make_ingestor(store).ingest(every)) == ["accepted"] * len(every)

    def upper(*names: str) -> int:
        chosen = [e for name in names for e in envs[name]]
        return by_account(expected_runs(list(nodes.values()), chosen))["acme"][1]

    today = NOW // DAY_NS
    windows = store.account_windows(["acme", "nobody"], today, [30, 90, 365])
    assert [w.days for w in windows["acme"]] == [30, 90, 365]
    assert [w.flops_upper for w in windows["acme"]] == [
        upper("5"),
        upper("5", "50"),
        upper("5", "50", "200"),
    ]
    assert [w.first_day for w in windows["acme"]] == [today - 29, today - 89, today - 364]
    w30 = windows["acme"][0]
    assert (w30.first_start_ns, w30.gpu_intervals) == (nodes["5"].t - 2 * 10**9, 2)
    assert [w.flops_upper for w in windows["nobody"]] == [0, 0, 0]  # nothing measured
    # All time holds every day, the ones past the longest window too.
    assert accounts_of(store)["acme"][1] == upper("5", "50", "200", "380")


def test_days_past_the_kept_bound_are_not_kept(store_url):
    store = open_store(store_url, now_ns=lambda: NOW, create=True, account_days_kept=100)
    try:
        old, recent = _day_node(150, "old"), _day_node(50, "recent")
        enrolled(store, [old, recent])
        verifier = RecordVerifier(trusted_keys=store.trusted_keys())
        today = NOW // DAY_NS
        store.commit([verifier.verify_bytes(old.envelope())], [], NOW)
        store.commit([verifier.verify_bytes(recent.envelope())], [], NOW)
        [w] = store.account_windows(["acme"], today, [400])["acme"]
        assert w.gpu_intervals == 1  # the day 150 days ago was never kept: past the bound
        assert accounts_of(store)["acme"][2] == 2  # all time counts it

        # 60 days later the day 50 days ago falls out of the 100 kept, and is deleted.
        later = _day_node(-59, "later")
        store.enroll(later.public_raw, later.node_id)
        record = RecordVerifier(trusted_keys=store.trusted_keys()).verify_bytes(later.envelope())
        store.commit([record], [], NOW + 60 * DAY)
        [w] = store.account_windows(["acme"], today + 60, [400])["acme"]
        assert w.gpu_intervals == 1
        assert accounts_of(store)["acme"][2] == 3
    finally:
        store.close()


def test_runs_and_accounts_page_by_account_then_run(store, make_ingestor):
    names = [("acme", "r1"), ("acme", "r2"), ("acme", "x1"), ("beta", "r1"), ("", "r0")]
    nodes = [
        Node(f"node-{i}", job=f"slurm:c/{i}", run=run, account=account)
        for i, (account, run) in enumerate(names)
    ]
    enrolled(store, nodes)
    envs = [n.envelope() for n in nodes]
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)

    def keys(page):
        return [(t.account, t.run) for t in page]

    assert keys(store.run_page(None, "", ALL, 10)) == sorted(names)
    assert keys(store.run_page(None, "r", ALL, 10)) == sorted(set(names) - {("acme", "x1")})
    assert keys(store.run_page("acme", "", ALL, 2)) == [("acme", "r1"), ("acme", "r2")]
    assert keys(store.run_page("acme", "", ("acme", "r2"), 2)) == [("acme", "x1")]
    assert keys(store.run_page("", "", ALL, 10)) == [("", "r0")]
    assert keys(store.run_page(None, "", ("acme", "x1"), 10)) == [("beta", "r1")]
    assert [a.account for a in store.account_page("", None, 10)] == ["", "acme", "beta"]
    assert [a.account for a in store.account_page("", None, 1)] == [""]
    assert [a.account for a in store.account_page("", "acme", 10)] == ["beta"]
    assert [(a.account, a.runs) for a in store.account_page("a", None, 10)] == [("acme", 3)]


@pytest.mark.sqlite_only
def test_a_sqlite_database_from_before_runs_counts_its_jobs_as_runs(tmp_path, make_ingestor):
    """Jobs held before run totals existed become runs of their own, account unknown: their
    records named neither. Records after the upgrade add to them."""
    path = tmp_path / "old.db"
    node = Node()
    envs = node.envelopes(3)
    db = sqlite3.connect(path)  # a database of schema version 3
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version in (1, 2, 3):
        for statement in sqlite_schema.MIGRATIONS[version - 1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?)", (version,))
    db.commit()
    db.close()
    _ingest_into_version_3(path, node, envs[:2])

    store = SQLiteStore(path, now_ns=lambda: NOW)
    try:
        assert store.schema_version() == sqlite_schema.SCHEMA_VERSION
        held = totals_of(store)[node.job]
        bit = CLASS_BIT[WorkloadClass.UNKNOWN]
        [run] = store.run_page(None, "", ALL, 10)
        assert (run.account, run.run, run.classes) == ("", node.job, bit)
        assert [run.flops_estimate, run.flops_upper] == held
        assert (run.gpu_time_fs, run.energy_nj) == (0, 0)  # not summed before the upgrade
        assert statuses(make_ingestor(store).ingest(envs)) == ["duplicate"] * 2 + ["accepted"]
        assert runs_of(store)[("", node.job)][:3] == expected_runs([node], envs)[("", node.job)][:3]
    finally:
        store.close()


def _ingest_into_version_3(path, node: Node, envs: list[bytes]) -> None:
    """What a collector of schema version 3 writes for `envs`: records, chains, job totals."""
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    records = [verifier.verify_bytes(e) for e in envs]
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
        "VALUES (?, ?, ?, 'enrolled', 1)",
        (node.key_id, node.node_id, node.public_raw),
    )
    for r in records:
        db.execute(
            "INSERT INTO records (key_id, sequence, digest, previous_digest, node_id, envelope, "
            "received_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                r.key_id,
                r.sequence,
                r.digest,
                r.previous_digest,
                r.node_id,
                r.envelope.to_bytes(),
                1,
            ),
        )
        db.execute(
            "INSERT INTO log_backfill (key_id, sequence) VALUES (?, ?)", (r.key_id, r.sequence)
        )
    db.execute("INSERT INTO chains VALUES (?, ?, ?)", (node.key_id, len(records), len(records)))
    [(job, s)] = [(j, s) for r in records[:1] for j, s in r.sums.jobs.items()]
    est = sum(r.sums.jobs[job][0] for r in records)
    up = sum(r.sums.jobs[job][1] for r in records)
    n = sum(r.sums.jobs[job][4] for r in records)
    db.execute(
        "INSERT INTO job_totals VALUES (?, ?, ?, ?, ?, ?)",
        (job, str(est), str(up), s[2], records[-1].sums.jobs[job][3], n),
    )
    db.commit()
    db.close()


@pytest.mark.postgres
def test_a_postgres_database_from_before_runs_counts_its_jobs_as_runs(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at "
            "TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for statement in postgres_schema.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute(
            "INSERT INTO job_totals VALUES ('slurm:c/1', 10, 20, 5, 9, 2), "
            "('slurm:c/2', 1, 2, 3, 12, 1)"
        )
    store = open_store(postgres_url, now_ns=lambda: NOW)
    try:
        assert store.schema_version() == postgres_schema.SCHEMA_VERSION
        assert runs_of(store) == {
            ("", "slurm:c/1"): [10, 20, 2, 0, 0],
            ("", "slurm:c/2"): [1, 2, 1, 0, 0],
        }
        [account] = store.account_page("", None, 10)
        assert (account.account, account.runs, account.flops_upper) == ("", 2, 22)
        assert (account.first_start_ns, account.last_end_ns) == (3, 12)
    finally:
        store.close()
