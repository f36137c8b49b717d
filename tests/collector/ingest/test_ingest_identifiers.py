"""Identifiers from outside, through the ingest path on both backends: a record naming a job,
node or GPU with a control character is refused alone, with a reason, and every other record
of its batch (other nodes', and its own node's later ones) is committed, totals exact."""

from __future__ import annotations

import pytest

from flopwatch.collector.store.base import Store
from tests.collector.collector_helpers import IngestorFactory, statuses, totals_of
from tests.nodes import Node, expected_totals

HOSTILE_NODES = {
    "NUL in a job id": {"job": "slurm:c/1\x00b"},
    "NUL in a GPU uuid": {"gpu_prefix": "GPU-x\x00"},
    "escape sequence in a node id": {"node_id": "node-\x1b[2J\x1b[31mred"},
    "newline in a job id": {"job": "slurm:c/2\nFLOP threshold crossed: job=forged"},
    "right-to-left override in a GPU uuid": {"gpu_prefix": "GPU-\u202e"},
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_NODES))
def test_a_record_with_a_bad_identifier_is_refused_alone(
    store: Store, make_ingestor: IngestorFactory, attack: str
) -> None:
    honest_a, honest_b = Node("node-a"), Node("node-b", job="slurm:c/1")
    hostile = Node(**{"node_id": "node-h", **HOSTILE_NODES[attack]})
    for n in (honest_a, honest_b, hostile):
        store.enroll(n.public_raw, n.node_id)
    good = [honest_a.envelope(), honest_b.envelope(), honest_a.envelope()]
    bad = hostile.envelope()

    acks = make_ingestor(store).ingest([good[0], bad, good[1], good[2]])

    assert statuses(acks) == ["accepted", "rejected", "accepted", "accepted"]
    assert acks[1].reason == "malformed"
    assert "U+" in acks[1].detail
    assert totals_of(store) == expected_totals([honest_a, honest_b], good)
    assert store.held_sequences(hostile.key_id) == []


def test_job_ids_that_differ_after_a_nul_keep_separate_totals(
    store: Store, make_ingestor: IngestorFactory
) -> None:
    """What json_each once did: "job\\x00a" and "job\\x00b" read as one id, one total
    overwriting the other. Now both are refused, and ids that share a prefix stay apart."""
    a, b = Node("node-a", job="slurm:c/job-a"), Node("node-b", job="slurm:c/job-ab")
    cut_a, cut_b = Node("node-c", job="slurm:c/job\x00a"), Node("node-d", job="slurm:c/job\x00b")
    for n in (a, b, cut_a, cut_b):
        store.enroll(n.public_raw, n.node_id)
    envs = [a.envelope(), b.envelope(), cut_a.envelope(), cut_b.envelope(), a.envelope()]

    acks = make_ingestor(store).ingest(envs)

    assert statuses(acks) == ["accepted", "accepted", "rejected", "rejected", "accepted"]
    held = expected_totals([a, b], [envs[0], envs[1], envs[4]])
    assert set(held) == {"slurm:c/job-a", "slurm:c/job-ab"}
    assert totals_of(store) == held
