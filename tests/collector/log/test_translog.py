"""The transparency log: tree arithmetic over stored subtrees, the SQLite log written inside the
commit, and signed tree heads. Proofs are checked against flopwatch.merkle, the reference."""

from __future__ import annotations

import dataclasses
import random
import sqlite3

import pytest

from flopwatch import merkle
from flopwatch.collector.log import translog
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.sqlite import tlog as sqlite_tlog
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import LogRangeError, StoreError
from flopwatch.keys import SigningKey
from flopwatch.statements import SignedTreeHead
from flopwatch.verify import RecordVerifier
from tests.collector.collector_helpers import statuses
from tests.nodes import NOW, Node


def leaf_hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def grown(hashes: list[bytes], batch: int) -> dict[tuple[int, int], bytes]:
    """Every node of a log built by appending `hashes` `batch` at a time, as a store does."""
    nodes: dict[tuple[int, int], bytes] = {}
    for start in range(0, len(hashes), batch):
        edge = {k: nodes[k] for k in translog.edge(start)}
        nodes.update(translog.append(start, edge, hashes[start : start + batch]))
    return nodes


# -- pure tree arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_proofs_from_stored_subtrees_equal_the_reference_for_every_small_tree(batch):
    for n in range(1, 40):
        hashes = leaf_hashes(n)
        nodes = grown(hashes, batch)
        assert len(nodes) == 2 * n - n.bit_count()  # every complete subtree, once
        assert translog.range_hash(0, n, nodes) == merkle.root_hash(hashes)
        for i in range(n):
            proof = [
                translog.range_hash(lo, hi, nodes) for lo, hi in translog.inclusion_ranges(i, n)
            ]
            assert tuple(proof) == merkle.inclusion_proof(hashes, i), (n, i)
        for m in range(n + 1):
            ranges = translog.consistency_ranges(m, n)
            proof = [translog.range_hash(lo, hi, nodes) for lo, hi in ranges]
            assert tuple(proof) == merkle.consistency_proof(hashes, m), (n, m)


def test_the_edge_is_the_subtrees_of_the_root():
    for n in [*range(1, 70), 1000, 2**20 - 1, 2**40 + 12345]:
        assert translog.edge(n) == translog.subtrees(0, n)
        assert len(translog.edge(n)) == n.bit_count()


def test_an_append_reads_only_the_edge_and_writes_under_two_nodes_per_leaf():
    # Whatever the log's size, appending needs only edge(size) and writes k leaves plus fewer
    # than k interior nodes: commit cost does not grow with the log.
    rng = random.Random(7)
    for size in [0, 1, 255, 256, 10**6 + 3, 2**40 - 1, 2**63 - 300]:
        edge = {node: rng.randbytes(32) for node in translog.edge(size)}
        k = 256
        new = translog.append(size, edge, [rng.randbytes(32) for _ in range(k)])
        assert len(edge) <= 64
        assert k <= len(new) < 2 * k + 64
        assert all(level == 0 or idx << level >= size - (1 << level) for level, idx in new)


def test_an_append_without_the_edge_is_a_store_error_not_a_wrong_tree():
    with pytest.raises(StoreError, match="missing"):
        translog.append(5, {}, [merkle.leaf_hash(b"x")])


def test_ranges_refuse_what_the_tree_does_not_hold():
    with pytest.raises(LogRangeError):
        translog.inclusion_ranges(5, 5)
    with pytest.raises(LogRangeError):
        translog.consistency_ranges(6, 5)


# -- the SQLite log, written by the commit ---------------------------------------------------------
def ingested(store: SQLiteStore, make_ingestor, *nodes: Node, each: int = 4) -> list[bytes]:
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)
    envs = [n.envelope() for _ in range(each) for n in nodes]
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)
    return envs


def stored_envelopes(db_path) -> list[bytes]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT r.envelope FROM log_leaves l JOIN records r USING (key_id, sequence) "
            "ORDER BY l.leaf_index"
        ).fetchall()
    return [bytes(r[0]) for r in rows]


def test_every_accepted_envelope_is_a_leaf_in_commit_order(store, db_path, make_ingestor):
    a, b = Node("a"), Node("b", job="other")
    envs = ingested(store, make_ingestor, a, b)
    assert store.log_size() == len(envs)
    # The leaves are the stored bytes, which are the received bytes re-serialized canonically.
    assert stored_envelopes(db_path) == envs
    log = TransparencyLog(store, SigningKey.generate())
    assert log.root(len(envs)) == merkle.root_hash([merkle.leaf_hash(e) for e in envs])
    assert store.log_leaf_index(b.key_id, 2) == 3
    assert store.log_leaf_index(b.key_id, 99) is None


def test_duplicates_and_rejects_add_no_leaf(store, make_ingestor):
    node = Node()
    envs = ingested(store, make_ingestor, node, each=3)
    ingestor = make_ingestor(store)
    assert statuses(ingestor.ingest([envs[1], b"junk"])) == ["duplicate", "rejected"]
    assert store.log_size() == 3


def test_a_failed_commit_logs_nothing(store, make_ingestor):
    node = Node()
    envs = ingested(store, make_ingestor, node, each=2)
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    again = verifier.verify_bytes(envs[0])  # (key, sequence) already held: the commit fails
    fresh = verifier.verify_bytes(node.envelope())
    with pytest.raises(StoreError):
        store.commit([fresh, again], [], NOW)
    assert store.log_size() == 2
    assert store.job_evidence(node.job).total.gpu_intervals == 2


def test_job_evidence_is_the_jobs_leaves_and_the_keys_that_signed_them(store, make_ingestor):
    a, b = Node("a"), Node("b", job="other")
    ingested(store, make_ingestor, a, b, each=3)
    store.revoke(b.key_id)
    ev = store.job_evidence(a.job)
    assert [e.leaf_index for e in ev.entries] == [0, 2, 4]
    assert {e.key_id for e in ev.entries} == {a.key_id}
    assert [n.key_id for n in ev.nodes] == [a.key_id]
    assert ev.total.gpu_intervals == 3 and ev.log_size == 6
    assert store.job_evidence(b.job).revoked_at_log_size == {b.key_id: 6}
    assert store.job_evidence("nobody") is None


def test_records_held_before_the_log_are_logged_at_the_next_open(db_path, make_ingestor):
    store = SQLiteStore(db_path, now_ns=lambda: NOW)
    node = Node()
    envs = ingested(store, make_ingestor, node, each=5)
    root = TransparencyLog(store, SigningKey.generate()).root(5)
    store.close()
    # What the migration leaves behind in a database from before the log: the records queued.
    with sqlite3.connect(db_path) as db:
        for table in ("log_nodes", "log_leaves", "log_jobs", "log_runs"):
            db.execute(f"DELETE FROM {table}")
        db.execute("UPDATE records SET leaf_index = NULL")
        db.execute(
            "INSERT INTO log_backfill (key_id, sequence) SELECT key_id, sequence FROM records "
            "ORDER BY received_at_ns, key_id, sequence"
        )
    store = SQLiteStore(db_path, now_ns=lambda: NOW)
    try:
        assert store.log_size() == 5
        assert TransparencyLog(store, SigningKey.generate()).root(5) == root
        assert [e.envelope for e in store.job_evidence(node.job).entries] == envs
        assert store.log_leaf_index(node.key_id, 5) == 4
    finally:
        store.close()


def test_log_nodes_that_are_missing_are_a_store_error(store, make_ingestor):
    ingested(store, make_ingestor, Node(), each=2)
    assert set(store.log_nodes([(1, 0), (0, 1)])) == {(1, 0), (0, 1)}
    with pytest.raises(StoreError, match="damaged"):
        store.log_nodes([(0, 7)])


def test_appending_leaves_directly_matches_the_commit_path(tmp_path):
    # The bench and the backfill use append_leaves; it must build the same tree.
    store = SQLiteStore(tmp_path / "x.db", now_ns=lambda: NOW)
    db = store._db
    leaves = [sqlite_tlog.Leaf("k", i, bytes([i]) * 40, frozenset({"j"})) for i in range(11)]
    db.execute("BEGIN IMMEDIATE")
    sqlite_tlog.append_leaves(db, leaves[:4])
    sqlite_tlog.append_leaves(db, leaves[4:])
    db.execute("COMMIT")
    want = merkle.root_hash([merkle.leaf_hash(x.data) for x in leaves])
    assert TransparencyLog(store, SigningKey.generate()).root(11) == want
    store.close()


# -- proofs and signed tree heads ----------------------------------------------------------------
def test_proofs_over_the_store_verify(store, make_ingestor):
    envs = ingested(store, make_ingestor, Node("a"), Node("b"), each=7)
    log = TransparencyLog(store, SigningKey.generate(), now_ns=lambda: NOW)
    size = len(envs)
    root = log.root(size)
    proofs = log.inclusion_proofs(range(size), size)
    for i, data in enumerate(envs):
        merkle.verify_inclusion(
            leaf_index=i,
            tree_size=size,
            leaf_hash=merkle.leaf_hash(data),
            proof=proofs[i],
            root=root,
        )
    for old in range(size + 1):
        merkle.verify_consistency(
            old_size=old,
            new_size=size,
            old_root=log.root(old),
            new_root=root,
            proof=log.consistency_proof(old, size),
        )
    with pytest.raises(LogRangeError):
        log.inclusion_proof(0, size + 1)
    with pytest.raises(LogRangeError):
        log.consistency_proof(3, size + 1)


def test_a_tree_head_is_signed_once_per_size_and_kept(store, make_ingestor):
    key = SigningKey.generate()
    clock = iter(range(NOW, NOW + 100))
    log = TransparencyLog(store, key, now_ns=lambda: next(clock))
    empty = log.sign()
    assert (empty.head.size, empty.head.root) == (0, merkle.EMPTY_ROOT)
    ingested(store, make_ingestor, Node(), each=3)
    first = log.sign()
    assert log.sign() == first  # the log did not grow: the same head, not a new signature
    assert first.head.size == 3 and first.head.log_id == key.key_id
    first.verify()
    assert SignedTreeHead.from_bytes(store.latest_tree_head()) == first
    assert log.latest() == first


def test_a_log_refuses_to_be_signed_by_another_key(store, make_ingestor):
    TransparencyLog(store, SigningKey.generate()).sign()
    ingested(store, make_ingestor, Node(), each=1)
    with pytest.raises(StoreError, match="use the collector's own key"):
        TransparencyLog(store, SigningKey.generate()).sign()


def test_a_tree_head_signed_by_another_key_than_it_names_does_not_verify(store):
    head = TransparencyLog(store, SigningKey.generate()).sign()
    other = SigningKey.generate()
    forged = dataclasses.replace(
        head.envelope,
        signatures=((head.head.log_id, other.sign(b"anything")),),
    )
    with pytest.raises(Exception, match="does not verify"):
        SignedTreeHead(head.head, forged).verify()
