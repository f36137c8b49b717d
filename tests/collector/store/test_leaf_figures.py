"""Sampled reports from stored leaf figures (log_jobs, log_runs: the figures each sum-tree leaf
states, written at commit), on every backend: the streamed report is byte for byte the one the
in-memory maker makes from the envelopes, for every scope (trees of 1 to 11 leaves), at every
page size, with all, some or none of the rows holding figures (a store half written before
they were stored); no envelope is read for a leaf with figures; a record pruned from the
database no longer stops a report unless it is drawn; and a drawn record whose envelope does
not give its stored figures is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

import psycopg
import pytest

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.sampled_report import build_sampled_report, build_sampled_run_report
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import LeafScope, PruneCandidate
from flopwatch.errors import ConfigError, StoreError
from flopwatch.keys import SigningKey
from flopwatch.merkle import leaf_hash
from flopwatch.verify.sampled import SampledVerifier
from flopwatch.verify.sampled_format import SampledReport
from tests.collector.collector_helpers import statuses
from tests.collector.store.reference_report import reference_report
from tests.collector.store.test_run_totals import enrolled, restarted_run
from tests.nodes import NOW, Node

KEY = SigningKey.generate()
SCOPES = (
    LeafScope(job_id="slurm:c/1"),  # 2 leaves
    LeafScope(job_id="slurm:c/2"),  # 3
    LeafScope(job_id="slurm:c/3"),  # 2
    LeafScope(job_id="slurm:c/4"),  # 1
    LeafScope(job_id="slurm:c/5"),  # 11
    LeafScope(account="acme", run="llama"),  # 5, two jobs on two nodes
    LeafScope(account="acme", run="llama-ft"),  # 2
    LeafScope(account="", run="slurm:c/4"),  # 1
    LeafScope(account="acme", run="big"),  # 11
)


def _filled(store: Store, make_ingestor) -> list[bytes]:
    nodes, envs = restarted_run()
    big = Node("node-e", job="slurm:c/5", run="big", account="acme")
    envs = [*envs, *big.envelopes(11)]
    enrolled(store, [*nodes, big])
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)
    return envs


def _forget_figures(store_url: str, leaves: Collection[int]) -> None:
    """Clear the figures of these leaves' index rows, as a collector from before they were
    stored wrote them."""
    for table in ("log_jobs", "log_runs"):
        sql = f"UPDATE {table} SET leaf_sums = NULL, flop_model_version = NULL WHERE leaf_index = "
        if store_url.startswith("sqlite:"):
            with sqlite3.connect(store_url.removeprefix("sqlite:")) as db:
                db.executemany(sql + "?", [(i,) for i in leaves])
        else:
            with psycopg.connect(store_url, autocommit=True) as pg, pg.cursor() as cur:
                cur.executemany(sql + "%s", [(i,) for i in leaves])


def _set_figures(store_url: str, leaf: int, data: bytes) -> None:
    for table in ("log_jobs", "log_runs"):
        sql = f"UPDATE {table} SET leaf_sums = "
        if store_url.startswith("sqlite:"):
            with sqlite3.connect(store_url.removeprefix("sqlite:")) as db:
                db.execute(sql + "? WHERE leaf_index = ?", (data, leaf))
        else:
            with psycopg.connect(store_url, autocommit=True) as pg:
                pg.execute(sql + "%s WHERE leaf_index = %s", (data, leaf))


def _streamed(store: Store, scope: LeafScope, **kw: int) -> bytes:
    log = TransparencyLog(store, KEY, now_ns=lambda: NOW)
    args = {"samples": 6, "probes": 6, "now_ns": lambda: NOW, **kw}
    if scope.is_run:
        return build_sampled_run_report(store, log, scope.account, scope.run, **args).to_bytes()
    return build_sampled_report(store, log, scope.job_id, **args).to_bytes()


def _todays(store: Store, scope: LeafScope) -> bytes:
    """The report the in-memory maker makes from every envelope of the scope."""
    log = TransparencyLog(store, KEY, now_ns=lambda: NOW)
    return reference_report(store, log, scope, created_ns=NOW, samples=6, probes=6)


@pytest.mark.parametrize("forget", ["none", "odd", "all"])
def test_the_report_from_stored_figures_is_todays_byte_for_byte(
    store, store_url, make_ingestor, forget
):
    envs = _filled(store, make_ingestor)
    forgotten = {i for i in range(len(envs)) if forget == "all" or (forget == "odd" and i % 2)}
    _forget_figures(store_url, forgotten)
    for scope in SCOPES:
        rows = store.scope_leaves(scope, -1, len(envs), 1000)
        assert [(e.has_figures, e.envelope == b"") for e in rows] == [
            (e.leaf_index not in forgotten,) * 2 for e in rows
        ]
        todays = _todays(store, scope)
        for page in (1, 2, 3, 1000):
            assert _streamed(store, scope, page=page) == todays, (scope, page)


def test_a_pruned_record_stops_a_report_only_if_drawn(store, make_ingestor):
    envs = _filled(store, make_ingestor)
    scope = LeafScope(account="acme", run="big")
    before = _streamed(store, scope, samples=2, probes=0)
    report = SampledReport.from_bytes(before)
    drawn = {o.leaf_index for o in report.openings}
    leaves = [e.leaf_index for e in store.scope_leaves(scope, -1, len(envs), 1000)]
    others = [i for i in leaves if i not in drawn]

    def prune(leaf: int) -> None:
        candidate = PruneCandidate(leaf, leaf_hash(envs[leaf]), frozenset({"slurm:c/5"}))
        assert store.prune_envelopes([candidate], NOW + 10**15) == [leaf]

    for leaf in others:
        prune(leaf)
    # Every record but the drawn ones pruned: the same report, byte for byte.
    assert _streamed(store, scope, samples=2, probes=0) == before
    v = SampledVerifier(collector_key_id=KEY.key_id, min_samples=2, min_probes=0)
    assert v.verify(before).records == 11
    prune(min(drawn))
    with pytest.raises(ConfigError, match=rf"log leaf {min(drawn)} of run 'big' .*, drawn by"):
        _streamed(store, scope, samples=2, probes=0)


def test_a_drawn_record_whose_envelope_differs_from_its_figures_is_refused(
    store, store_url, make_ingestor
):
    envs = _filled(store, make_ingestor)
    scope = LeafScope(job_id="slurm:c/5")
    for e in store.scope_leaves(scope, -1, len(envs), 1000):
        assert e.leaf_sums is not None
        more = (int.from_bytes(e.leaf_sums[:16], "big") + 1).to_bytes(16, "big")
        _set_figures(store_url, e.leaf_index, more + e.leaf_sums[16:])
    # Every leaf's stored estimate is one FLOP more than its envelope's: whichever is drawn.
    with pytest.raises(StoreError, match="its envelope does not give the figures stored for it"):
        _streamed(store, scope, samples=1, probes=0)


def test_a_pruned_record_without_figures_stops_a_report_as_before(store, store_url, make_ingestor):
    envs = _filled(store, make_ingestor)
    scope = LeafScope(account="acme", run="big")
    leaves = [e.leaf_index for e in store.scope_leaves(scope, -1, len(envs), 1000)]
    _forget_figures(store_url, leaves)
    candidate = PruneCandidate(leaves[3], leaf_hash(envs[leaves[3]]), frozenset({"slurm:c/5"}))
    assert store.prune_envelopes([candidate], NOW + 10**15) == [leaves[3]]
    with pytest.raises(ConfigError, match=rf"log leaf {leaves[3]} of run 'big' .* before its fig"):
        _streamed(store, scope, samples=2, probes=0)
