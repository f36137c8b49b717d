"""A run's log leaves (`LogStore.run_evidence`), on every backend, and the sampled run report
built from them: a run spanning two jobs on two nodes verifies to exactly the run's totals
(those `flopwatch runs` lists); a store that leaves a record of the run out, or a report
changed after it was made, is refused; and a database from before the run index is backfilled
at open."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

import psycopg
import pytest

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.sampled_report import build_sampled_run_report
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.postgres import schema as postgres_schema
from flopwatch.collector.store.records import LeafScope
from flopwatch.collector.store.sqlite import schema as sqlite_schema
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import BundleVerificationError, ConfigError
from flopwatch.keys import SigningKey
from flopwatch.verify.sampled import SampledVerifier
from flopwatch.verify.sampled_format import SampledReport
from tests.collector.collector_helpers import ALL, statuses
from tests.collector.store.reference_report import reference_report
from tests.collector.store.test_run_totals import enrolled, restarted_run
from tests.nodes import NOW

KEY = SigningKey.generate()


def _filled(store: Store, make_ingestor) -> list[bytes]:
    nodes, envs = restarted_run()
    enrolled(store, nodes)
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)
    return envs


def _report(store: Store, account: str = "acme", run: str = "llama", **kw: int) -> bytes:
    log = TransparencyLog(store, KEY, now_ns=lambda: NOW)
    samples, probes = kw.get("samples", 8), kw.get("probes", 8)
    return build_sampled_run_report(
        store, log, account, run, samples=samples, probes=probes, now_ns=lambda: NOW
    ).to_bytes()


def _verify(data: bytes, samples: int = 8, probes: int = 8):
    v = SampledVerifier(collector_key_id=KEY.key_id, min_samples=samples, min_probes=probes)
    return v.verify(data)


def test_a_runs_leaves_are_its_records_in_log_order(store, make_ingestor):
    envs = _filled(store, make_ingestor)
    # restarted_run: 2 records of job 1 (node-a), 3 of job 2 (node-b), both run llama of
    # acme; then 2 of llama-ft and 1 of a job of no run: log leaves 0..7 in that order.
    llama = store.run_evidence("acme", "llama")
    assert llama is not None
    assert [e.leaf_index for e in llama.entries] == [0, 1, 2, 3, 4]
    assert [e.envelope for e in llama.entries] == envs[:5]
    assert {n.node_id for n in llama.nodes} == {"node-a", "node-b"}
    [total] = store.run_page("acme", "llama", ALL, 1)
    assert llama.total == total
    ft = store.run_evidence("acme", "llama-ft")
    assert ft is not None and [e.leaf_index for e in ft.entries] == [5, 6]
    plain = store.run_evidence("", "slurm:c/4")  # a job of no declared run is its own run
    assert plain is not None and [e.leaf_index for e in plain.entries] == [7]
    assert store.run_evidence("", "llama") is None  # a run is its account and name together
    assert store.run_evidence("acme", "nope") is None


def test_a_sampled_run_report_verifies_to_the_runs_totals(store, make_ingestor):
    _filled(store, make_ingestor)
    r = _verify(_report(store))
    [total] = store.run_page("acme", "llama", ALL, 1)
    assert (r.run, r.account, r.job_id) == ("llama", "acme", "")
    assert (r.flops_estimate, r.flops_upper) == (total.flops_estimate, total.flops_upper)
    assert r.gpu_intervals == total.gpu_intervals == 7  # 2 records x 2 GPUs + 3 x 1
    assert r.gpu_ns * 10**6 == total.gpu_time_fs  # whole GPUs: share-weighted time equal
    assert (r.records, r.window) == (5, (0, 4))
    assert r.to_json()["scope"] == "run" and r.to_json()["run"] == "llama"
    plain = _verify(_report(store, "", "slurm:c/4"))
    [total] = store.run_page("", "slurm:c/4", ALL, 1)
    assert (plain.flops_upper, plain.records) == (total.flops_upper, 1)


def test_a_scopes_leaves_page_in_log_order_on_every_backend(store, make_ingestor):
    _filled(store, make_ingestor)
    size = store.log_size()
    for scope, want in [
        (LeafScope(account="acme", run="llama"), [0, 1, 2, 3, 4]),
        (LeafScope(account="acme", run="llama-ft"), [5, 6]),
        (LeafScope(job_id="slurm:c/2"), [2, 3, 4]),
        (LeafScope(account="", run="llama"), []),
    ]:
        for page in (1, 2, 1000):
            got, after = [], -1
            while rows := store.scope_leaves(scope, after, size, page):
                assert len(rows) <= page
                got += rows
                after = rows[-1].leaf_index
            assert [e.leaf_index for e in got] == want
    # below_leaf bounds the page; a limit past the store's cap is capped, not refused
    assert [e.leaf_index for e in store.scope_leaves(LeafScope("", "acme", "llama"), 0, 3, 9)] == [
        1,
        2,
    ]
    assert len(store.scope_leaves(LeafScope("", "acme", "llama"), -1, size, 10**9)) == 5


def test_the_streamed_run_report_is_todays_report_byte_for_byte(store, make_ingestor):
    """The collector's streamed builder, at any page size, makes exactly the report that
    reading the whole run in one snapshot (`run_evidence`) and the in-memory maker made."""
    _filled(store, make_ingestor)
    log = TransparencyLog(store, KEY, now_ns=lambda: NOW)
    before = reference_report(
        store, log, LeafScope(account="acme", run="llama"), created_ns=NOW, samples=6, probes=6
    )
    for page in (1, 2, 1000):
        now = build_sampled_run_report(
            store, log, "acme", "llama", samples=6, probes=6, now_ns=lambda: NOW, page=page
        )
        assert now.to_bytes() == before


def test_a_store_that_leaves_a_record_of_the_run_out_is_refused(store, make_ingestor):
    _filled(store, make_ingestor)
    honest = store.scope_leaves

    def lying(scope, after_leaf: int, below_leaf: int, limit: int):
        # leaf 2 (node-b's first) left out
        return [e for e in honest(scope, after_leaf, below_leaf, limit) if e.leaf_index != 2]

    store.scope_leaves = lying  # type: ignore[method-assign]
    # 200 probes in a window of 5 leaves: leaf 2 is drawn (the chance it is not: 0.8^200).
    with pytest.raises(BundleVerificationError) as e:
        _verify(_report(store, probes=200), probes=200)
    assert (e.value.step, e.value.reason) == (10, "withheld_record")


def test_a_changed_run_report_is_refused(store, make_ingestor):
    _filled(store, make_ingestor)
    report = SampledReport.from_bytes(_report(store))
    o, *rest = report.openings
    more = type(o.sums)(o.sums.estimate + 1, o.sums.upper, o.sums.intervals, o.sums.gpu_ns)
    changed = report.__class__(
        report.tree_head,
        report.claim,
        (o.__class__(o.position, o.leaf_index, o.envelope, o.proof, more, o.path), *rest),
        report.probes,
    )
    with pytest.raises(BundleVerificationError) as e:
        _verify(changed.to_bytes())
    assert (e.value.step, e.value.reason) == (7, "leaf_misstated")


def test_no_report_of_a_run_the_store_does_not_hold(store, make_ingestor):
    _filled(store, make_ingestor)
    with pytest.raises(ConfigError, match="no total of run 'llama' of account"):
        _report(store, "beta", "llama")


@pytest.mark.sqlite_only
def undo_from(migrations: Sequence[Sequence[str]], version: int) -> list[str]:
    """What takes a database back to the version before `version` (1-based): drop every table
    that migration and every later one create, and every column they add to older tables."""
    later = [sql for statements in migrations[version - 1 :] for sql in statements]
    created = [m.group(1) for sql in later if (m := re.match(r"\s*CREATE TABLE (\w+)", sql))]
    added = [
        (m.group(1), m.group(2))
        for sql in later
        if (m := re.match(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", sql))
        and m.group(1) not in created
    ]
    return [f"DROP TABLE {t}" for t in created] + [
        f"ALTER TABLE {t} DROP COLUMN {c}" for t, c in added
    ]


def test_a_database_from_before_the_run_index_is_backfilled_at_open(tmp_path, make_ingestor):
    path = tmp_path / "old.db"
    store = SQLiteStore(path, now_ns=lambda: NOW)
    try:
        envs = _filled(store, make_ingestor)
    finally:
        store.close()
    db = sqlite3.connect(path)  # as a collector of the version before log_runs left it
    for statement in undo_from(sqlite_schema.MIGRATIONS, sqlite_schema.RUN_LEAVES_VERSION):
        db.execute(statement)
    db.execute("DELETE FROM schema_version WHERE version >= ?", (sqlite_schema.RUN_LEAVES_VERSION,))
    db.commit()
    db.close()
    store = SQLiteStore(path, now_ns=lambda: NOW)
    try:
        assert store.schema_version() == sqlite_schema.SCHEMA_VERSION
        llama = store.run_evidence("acme", "llama")
        assert llama is not None and [e.envelope for e in llama.entries] == envs[:5]
        assert _verify(_report(store)).records == 5
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_database_from_before_the_run_index_is_backfilled_at_open(
    postgres_url, make_ingestor
):
    store = open_store(postgres_url, now_ns=lambda: NOW, create=True)
    try:
        envs = _filled(store, make_ingestor)
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for statement in undo_from(postgres_schema.MIGRATIONS, postgres_schema.RUN_LEAVES_VERSION):
            db.execute(statement)
        db.execute(
            "DELETE FROM schema_version WHERE version >= %s",
            (postgres_schema.RUN_LEAVES_VERSION,),
        )
    store = open_store(postgres_url, now_ns=lambda: NOW)
    try:
        assert store.schema_version() == postgres_schema.SCHEMA_VERSION
        llama = store.run_evidence("acme", "llama")
        assert llama is not None and [e.envelope for e in llama.entries] == envs[:5]
        assert _verify(_report(store)).records == 5
    finally:
        store.close()
