"""RetentionStore on both backends: which records may be archived, and pruning their envelope
bytes while the chain, totals, measured time and the transparency log stay as they were."""

from __future__ import annotations

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import PruneCandidate
from flopwatch.keys import SigningKey
from flopwatch.merkle import leaf_hash
from tests.collector.retention_helpers import CUT, fill
from tests.nodes import T0


def candidates(store: Store, leaves: list[int] | None = None) -> list[PruneCandidate]:
    entries = store.archivable(CUT, -1, store.log_size(), 100)
    return [
        PruneCandidate(e.leaf_index, leaf_hash(e.envelope), frozenset({"slurm:c/1"}))
        for e in entries
        if leaves is None or e.leaf_index in leaves
    ]


def test_archivable_pages_the_held_records_received_before_the_cut(store: Store) -> None:
    f = fill(store)
    size = store.log_size()
    assert size == 5
    everything = store.archivable(CUT, -1, size, 100)
    # the late record of job 2 was received after the cut-off
    assert [e.leaf_index for e in everything] == [0, 1, 2, 3]
    assert [e.envelope for e in everything] == [*f.early_a, *f.early_b]
    assert [e.leaf_index for e in store.archivable(CUT, 0, size, 2)] == [1, 2]
    assert [e.leaf_index for e in store.archivable(CUT, -1, 2, 100)] == [0, 1]


def test_prune_drops_only_envelope_bytes_and_keeps_log_totals_and_chains(store: Store) -> None:
    f = fill(store)
    log = TransparencyLog(store, SigningKey.generate())
    size = store.log_size()
    root, totals, chains = log.root(size), store.job_totals(), store.chain_states()
    gpus, runs = store.gpu_totals(), store.coverage("GPU-node-a-0", 0, 2**62)
    a_leaves = [0, 1, 2]  # job 1's records
    job_2_old = PruneCandidate(3, leaf_hash(f.early_b[0]), frozenset({"slurm:c/2"}))
    pruned = store.prune_envelopes([*candidates(store, a_leaves), job_2_old], CUT)
    assert pruned == a_leaves  # job 2 measured after the cut-off: its old record stays
    assert log.root(size) == root
    assert store.log_nodes({(0, i) for i in range(size)})[(0, 0)] == leaf_hash(f.early_a[0])
    assert store.job_totals() == totals and store.chain_states() == chains
    assert store.gpu_totals() == gpus
    assert store.coverage("GPU-node-a-0", 0, 2**62) == runs
    evidence = store.job_evidence("slurm:c/1")
    assert evidence is not None and evidence.total == totals[0]
    assert [e.archived for e in evidence.entries] == [True, True, True]
    assert [e.sequence for e in evidence.entries] == [1, 2, 3]
    other = store.job_evidence("slurm:c/2")
    assert other is not None and not any(e.archived for e in other.entries)
    # Pruned records are not archivable again, and pruning again changes nothing.
    assert [e.leaf_index for e in store.archivable(CUT, -1, size, 100)] == [3]
    assert store.prune_envelopes(candidates(store, a_leaves), CUT) == []
    # The chain goes on: the next record of node a links to the pruned ones.
    f.clock[0] += 60 * 10**9
    [ack] = f.ingestor(store).ingest([f.a.envelope()])
    assert ack.status == "accepted" and store.held_sequences(f.a.key_id) == [1, 2, 3, 4]
    assert store.log_size() == size + 1 and log.root(size) == root


def test_prune_refuses_bytes_that_are_not_the_logged_leaf(store: Store) -> None:
    fill(store)
    forged = PruneCandidate(0, leaf_hash(b"not the record"), frozenset({"slurm:c/1"}))
    assert store.prune_envelopes([forged], CUT) == []
    evidence = store.job_evidence("slurm:c/1")
    assert evidence is not None and not any(e.archived for e in evidence.entries)


def test_prune_keeps_a_record_whose_job_measured_after_the_cut(store: Store) -> None:
    fill(store)
    # Judged against a cut-off before job 1 ended, nothing of it may go.
    assert store.prune_envelopes(candidates(store, [0, 1, 2]), T0 + 1) == []
    # An unattributed bucket never ends: it does not hold a record back.
    e = store.archivable(CUT, -1, 1, 1)[0]
    bucket = PruneCandidate(0, leaf_hash(e.envelope), frozenset({"unattributed:c/node-a"}))
    assert store.prune_envelopes([bucket], CUT) == [0]
