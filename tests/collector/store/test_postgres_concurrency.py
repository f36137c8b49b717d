"""Two or more writers on one PostgreSQL schema: what one commits between another's judging and
its commit comes back to the other as duplicate or rejected, never counted twice; alerts fire
once; a threaded free-for-all ends with the totals of one writer.

The deterministic tests run the other writer inside the first one's commit call, before the real
commit: exactly the window in which two collectors race.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from flopwatch.collector.ingest.ingestor import MAX_COMMIT_ATTEMPTS
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.errors import StoreConflictError
from flopwatch.verify.sums import DAY_NS
from tests.collector.collector_helpers import (
    RecordingSink,
    accounts_of,
    runs_of,
    statuses,
    totals_of,
)
from tests.nodes import NOW, Node, by_account, expected_runs, expected_totals

pytestmark = pytest.mark.postgres


@pytest.fixture
def stores(postgres_url):
    """Two stores (two collectors' connections) on one fresh schema."""
    opened = [PostgresStore(postgres_url, now_ns=lambda: NOW) for _ in range(2)]
    yield opened
    for s in opened:
        s.close()


def before_commit(monkeypatch, store: PostgresStore, meanwhile: Callable[[], None]) -> None:
    """Run `meanwhile` once, after the ingestor judged its batch, before its first commit."""
    real = store.commit
    pending = [meanwhile]

    def commit(records, alerts, received_at_ns):
        while pending:
            pending.pop()()
        return real(records, alerts, received_at_ns)

    monkeypatch.setattr(store, "commit", commit)


def test_record_committed_meanwhile_comes_back_duplicate(stores, make_ingestor, monkeypatch):
    a, b = stores
    node = Node(gpus=2)
    a.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(3)
    other = []
    before_commit(monkeypatch, a, lambda: other.extend(make_ingestor(b).ingest(envs[1:2])))

    acks = make_ingestor(a).ingest(envs)

    assert statuses(other) == ["accepted"]
    assert statuses(acks) == ["accepted", "duplicate", "accepted"]
    assert totals_of(a) == expected_totals([node], envs)
    assert a.held_sequences(node.key_id) == [1, 2, 3]
    assert a.chain_states()[0].held == 3
    assert sum(g.gpu_intervals for g in a.job_gpus(node.job)) == 6
    assert a.log_size() == 3  # each record logged once


def test_overlap_committed_meanwhile_is_rejected(stores, make_ingestor, monkeypatch):
    a, b = stores
    x = Node("node-x", gpu_prefix="GPU-shared")
    y = Node("node-y", gpu_prefix="GPU-shared")  # a second agent measuring the same GPU
    for n in (x, y):
        a.enroll(n.public_raw, n.node_id)
    env_x = x.envelope(seconds=2.0)
    env_y = y.envelope(start_ns=x.t - 10**9)
    before_commit(monkeypatch, a, lambda: make_ingestor(b).ingest([env_y]))

    [ack] = make_ingestor(a).ingest([env_x])

    assert (ack.status, ack.reason) == ("rejected", "overlap")
    assert totals_of(a) == expected_totals([y], [env_y])


def test_fork_committed_meanwhile_is_rejected(stores, make_ingestor, monkeypatch):
    a, b = stores
    node = Node()
    a.enroll(node.public_raw, node.node_id)
    one = node.envelope()
    other_chain = node.new_builder()
    node.envelope(builder=other_chain)  # another record 1, never sent
    other_two = node.envelope(builder=other_chain)  # links to it, not to `one`
    before_commit(monkeypatch, a, lambda: make_ingestor(b).ingest([one]))

    [ack] = make_ingestor(a).ingest([other_two])

    assert (ack.status, ack.reason) == ("rejected", "chain_fork")
    assert a.held_sequences(node.key_id) == [1]


def test_revocation_meanwhile_refuses_the_batch(stores, make_ingestor, monkeypatch):
    a, b = stores
    node = Node()
    a.enroll(node.public_raw, node.node_id)
    before_commit(monkeypatch, a, lambda: b.revoke(node.key_id))

    [ack] = make_ingestor(a).ingest([node.envelope()])

    assert (ack.status, ack.reason) == ("rejected", "revoked_key")
    assert a.job_totals() == []
    assert a.log_size() == 0


def test_threshold_two_commits_cross_together_fires_once(stores, make_ingestor, monkeypatch):
    a, b = stores
    x, y = Node("node-x"), Node("node-y")  # same job
    for n in (x, y):
        a.enroll(n.public_raw, n.node_id)
    env_x, env_y = x.envelope(), y.envelope()
    per_record = expected_totals([x], [env_x])[x.job][1]
    threshold = per_record * 3 // 2  # neither record alone reaches it
    sink_a, sink_b = RecordingSink(), RecordingSink()
    ingest_b = make_ingestor(b, thresholds=(threshold,), sinks=[sink_b])
    before_commit(monkeypatch, a, lambda: ingest_b.ingest([env_y]))

    assert statuses(make_ingestor(a, thresholds=(threshold,), sinks=[sink_a]).ingest([env_x])) == [
        "accepted"
    ]

    # B committed first and saw one record; A decided before B's commit, so its commit alone
    # did not alert either. A's look at the committed totals finds the crossing.
    assert sink_b.events == []
    assert [(e.job_id, e.threshold, e.value) for e in sink_a.events] == [
        (x.job, threshold, 2 * per_record)
    ]
    assert [(e.job_id, e.threshold) for e in a.fired_alerts()] == [(x.job, threshold)]


def test_alert_decided_by_two_collectors_fires_once(stores, make_ingestor, monkeypatch):
    a, b = stores
    x, y = Node("node-x"), Node("node-y")
    for n in (x, y):
        a.enroll(n.public_raw, n.node_id)
    sink_a, sink_b = RecordingSink(), RecordingSink()
    ingest_b = make_ingestor(b, thresholds=(1,), sinks=[sink_b])
    before_commit(monkeypatch, a, lambda: ingest_b.ingest([y.envelope()]))

    make_ingestor(a, thresholds=(1,), sinks=[sink_a]).ingest([x.envelope()])

    assert [e.threshold for e in sink_b.events] == [1]
    assert sink_a.events == []  # A decided it too, but B's row was there first
    assert len(a.fired_alerts()) == 1


def test_endless_conflicts_end_in_retry(stores, make_ingestor, monkeypatch):
    a, _ = stores
    node = Node()
    a.enroll(node.public_raw, node.node_id)
    attempts = []

    def always_conflicting(records, alerts, received_at_ns):
        attempts.append(len(records))
        raise StoreConflictError("another writer got there first")

    monkeypatch.setattr(a, "commit", always_conflicting)
    acks = make_ingestor(a).ingest(node.envelopes(2))

    assert statuses(acks) == ["retry", "retry"]
    assert attempts == [2] * MAX_COMMIT_ATTEMPTS


def test_writers_racing_on_the_same_records_count_each_once(postgres_url, make_ingestor):
    """Four writers (threads, one connection each) ingest the same envelopes in different
    orders and batch sizes, resending what they were told to retry, as agents do. Every node
    adds to one run of one account: their sums are the rows all writers contend for."""
    labels = {"run": "llama", "account": "acme"}
    nodes = [Node(f"node-{i}", gpus=2, **labels) for i in range(3)]
    twin = Node("node-0-twin", gpus=2, gpu_prefix="GPU-node-0", **labels)  # node-0's GPUs
    setup = PostgresStore(postgres_url, now_ns=lambda: NOW)
    for n in [*nodes, twin]:
        setup.enroll(n.public_raw, n.node_id)
    envs = [e for n in nodes for e in n.envelopes(24)]
    twin_envs = twin.envelopes(24)  # the same seconds and readings as node-0's: overlaps
    everything = envs + twin_envs
    writers = 4
    start = threading.Barrier(writers)
    results: list[list[tuple[bytes, str]]] = [[] for _ in range(writers)]
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        rng = random.Random(i)
        store = PostgresStore(postgres_url, now_ns=lambda: NOW)
        ingestor = make_ingestor(store)
        todo = list(everything)
        rng.shuffle(todo)
        start.wait()
        try:
            for _ in range(20):  # rounds of resending what was acked "retry"
                retry = []
                while todo:
                    size = rng.randint(1, 12)
                    batch, todo = todo[:size], todo[size:]
                    for data, ack in zip(batch, ingestor.ingest(batch), strict=True):
                        results[i].append((data, ack.status))
                        if ack.status == "retry":
                            retry.append(data)
                if not retry:
                    break
                todo = retry
        except BaseException as e:
            failures.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

    accepted = Counter(data for r in results for data, status in r if status == "accepted")
    assert all(n == 1 for n in accepted.values())
    for own, twins in zip(envs[:24], twin_envs, strict=True):
        assert accepted[own] + accepted[twins] == 1  # one of each overlapping pair
    assert all(accepted[e] == 1 for e in envs[24:])
    # Twin records carry node-0's readings, so whichever of a pair won, the totals are the same.
    assert totals_of(setup) == expected_totals(nodes, envs)
    runs = expected_runs(nodes, envs)
    assert runs_of(setup) == runs
    assert accounts_of(setup) == by_account(runs)
    [[window]] = setup.account_windows(["acme"], NOW // DAY_NS, [31]).values()
    assert [window.flops_upper, window.gpu_intervals] == by_account(runs)["acme"][1:3]
    assert setup.log_size() == len(accepted) == len(envs)
    [job] = setup.job_totals()
    assert len(setup.job_evidence(job.job_id).entries) == len(envs)
    setup.close()
