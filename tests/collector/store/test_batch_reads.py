"""The reads the ingestor makes for a whole batch at once (`Store.coverage_of`,
`Store.chain_around`), on every backend, against a model of what the store holds; and judging
with them (records a verify worker verified, prefetched) gives the same answers as judging
record by record.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopwatch.collector.ingest.ingestor import Submission
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.verify import RecordVerifier
from tests.collector.collector_helpers import statuses
from tests.nodes import T0, Node

S = 10**9
# Held slots of one GPU, in seconds from T0: runs [0, 3), [5, 6) and [8, 10).
HELD = [0, 1, 2, 5, 8, 9]
RUNS = [(T0, T0 + 3 * S), (T0 + 5 * S, T0 + 6 * S), (T0 + 8 * S, T0 + 10 * S)]


def held_node(store: Store) -> tuple[Node, list[bytes]]:
    node = Node("node-a")
    store.enroll(node.public_raw, node.node_id)
    envs = [node.envelope(start_ns=T0 + s * S) for s in HELD]
    return node, envs


def model(lo: int, hi: int) -> list[tuple[int, int]]:
    """What `coverage` promises: the run starting at or before `lo` (it may reach in) and every
    run starting before `hi` after it."""
    before = [r for r in RUNS if r[0] <= lo]
    first = before[-1][0] if before else lo
    return [r for r in RUNS if first <= r[0] < hi]


def test_coverage_of_many_spans_in_one_read(store, make_ingestor):
    node, envs = held_node(store)
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)
    gpu = node.gpus[0].uuid
    edges = [T0 + s * S for s in (-1, 0, 1, 3, 4, 5, 6, 7, 9, 10, 12)]
    spans = [(gpu, lo, hi) for lo, hi in itertools.combinations(edges, 2)]
    spans += [("GPU-unknown", T0, T0 + 10 * S), spans[0]]  # a device with none; a repeat
    got = store.coverage_of(spans)
    assert set(got) == set(spans)
    for span in spans:
        want = model(span[1], span[2]) if span[0] == gpu else []
        assert got[span] == want, span
        assert store.coverage(*span) == want
    assert store.coverage_of([]) == {}


def test_chain_around_reads_each_sequence_and_its_neighbours(store, make_ingestor):
    node, envs = held_node(store)
    assert statuses(make_ingestor(store).ingest(envs)) == ["accepted"] * len(envs)
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})
    held = {
        r.sequence: (r.digest, r.previous_digest) for r in (verifier.verify_bytes(e) for e in envs)
    }
    assert sorted(held) == [1, 2, 3, 4, 5, 6]
    for wanted in ([2], [1, 2, 3], [6, 7, 9], [1, 6], [10]):
        got = store.chain_around([(node.key_id, n) for n in wanted] + [("unknown-key", 3)])
        near = {m for n in wanted for m in (n - 1, n, n + 1) if m in held}
        assert got.get(node.key_id, {}) == {m: held[m] for m in near}, wanted
        assert "unknown-key" not in got
    assert store.chain_around([]) == {}


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[int, bool]]:
    """Envelopes by index into a pool (repeats are duplicates; two envelopes of one slot
    overlap; a second chain of the same key forks), each pre-verified or not."""
    n = draw(st.integers(1, 12))
    return [(draw(st.integers(0, 9)), draw(st.booleans())) for _ in range(n)]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(arrivals(), st.integers(1, 6))
def test_prefetched_judging_answers_as_record_by_record(
    make_ingestor, tmp_path_factory, order, batch_size
):
    # SQLite only under hypothesis (a fresh database per example); the reads themselves are
    # checked on both backends above.
    node = Node("node-a", gpus=2)
    fork = node.new_builder()
    pool = [node.envelope(start_ns=T0 + s * S) for s in range(6)]
    pool += [node.envelope(start_ns=T0 + s * S, builder=fork) for s in (2, 3)]  # forks/overlaps
    pool += [node.envelope(start_ns=T0 + 20 * S), node.envelope(start_ns=T0 + 40 * S)]
    verifier = RecordVerifier(trusted_keys={node.key_id: node.key.public_key})

    answers = []
    for prefetch in (False, True):
        store = SQLiteStore(tmp_path_factory.mktemp("db") / "c.db")
        store.enroll(node.public_raw, node.node_id)
        ingestor = make_ingestor(store)
        items = [
            Submission(
                pool[i],
                node.public_raw,
                verifier.verify_bytes(pool[i]) if prefetch and ahead else None,
            )
            for i, ahead in order
        ]
        acks = []
        for k in range(0, len(items), batch_size):
            acks += ingestor.ingest_from(items[k : k + batch_size])
        answers.append(([(a.status, a.reason) for a in acks], store.job_totals()))
        store.close()
    assert answers[0] == answers[1]
