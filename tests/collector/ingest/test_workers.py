"""Verification ahead of the ingest thread: in worker processes, against the presented key.

A record verified ahead must be exactly the record the ingest thread would have verified, and
it may only be taken where the ingest thread trusts the very key that verified it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

import flopwatch.collector.config as config_module
import flopwatch.collector.ingest.ingestor as ingest_module
from flopwatch.collector.config import parse_verify_workers, usable_cpus
from flopwatch.collector.ingest.ingestor import Submission
from flopwatch.collector.ingest.workers import (
    VerifyJob,
    VerifyWorkers,
    from_wire,
    to_wire,
    verify_presented,
)
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import pae
from flopwatch.errors import ConfigError
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.verify import RecordVerifier
from tests.collector.collector_helpers import statuses, totals_of
from tests.nodes import NOW, T0, Node


def inline(node: Node, data: bytes):
    return RecordVerifier(trusted_keys={node.key_id: node.key.public_key}).verify_bytes(data)


def test_a_record_verified_against_the_presented_key_is_the_inline_record():
    node = Node(gpus=2)
    for data in node.envelopes(3):
        got = verify_presented(VerifyJob(data, node.public_raw, NOW), DEFAULT_LIMITS)
        assert got == inline(node, data)


@pytest.mark.parametrize(
    "case",
    ["no key presented", "another key presented", "not a key", "tampered", "ends in the future"],
)
def test_what_cannot_be_verified_against_the_presented_key_comes_back_none(case):
    node = Node()
    data = node.envelope()
    job = VerifyJob(data, node.public_raw, NOW)
    if case == "no key presented":
        job = job._replace(presented_key=None)
    elif case == "another key presented":
        job = job._replace(presented_key=Node("other").public_raw)
    elif case == "not a key":
        job = job._replace(presented_key=b"short")
    elif case == "tampered":
        job = job._replace(envelope=data.replace(b"slurm:c/1", b"slurm:c/2"))
    else:
        # The clock reads so early that the interval ends beyond the skew allowed.
        job = job._replace(now_ns=T0 - DEFAULT_LIMITS.max_clock_skew_ns)
    assert verify_presented(job, DEFAULT_LIMITS) is None


def test_an_unexpected_verifier_failure_leaves_the_record_to_the_ingest_thread(monkeypatch):
    """A worker never dies of what it is sent: whatever goes wrong, the ingest thread verifies
    the envelope inline and reports it."""
    node = Node()

    def broken(*_a, **_kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(RecordVerifier, "verify", broken)
    assert (
        verify_presented(VerifyJob(node.envelope(), node.public_raw, NOW), DEFAULT_LIMITS) is None
    )


def test_the_wire_form_rebuilds_the_same_record():
    node = Node(gpus=3)
    data = node.envelope(seconds=2.0)
    record = inline(node, data)
    assert from_wire(data, to_wire(record), DEFAULT_LIMITS) == record


@pytest.fixture
def workers():
    w = VerifyWorkers(2, DEFAULT_LIMITS)
    yield w
    w.close()


def test_workers_verify_a_batch_in_order_as_the_ingest_thread_would(workers):
    nodes = [Node(f"node-{i}", gpus=2) for i in range(3)]
    sent = [(n, d) for n in nodes for d in n.envelopes(5)]
    items = [(d, n.public_raw) for n, d in sent]
    items.append((Node("stranger").envelope(), None))  # nothing presented: verified inline
    got = workers.verify(items, NOW)
    assert got == [inline(n, d) for n, d in sent] + [None]


def test_a_dead_worker_costs_its_share_of_one_batch_and_is_started_again(workers):
    node = Node()
    items = [(d, node.public_raw) for d in node.envelopes(4)]
    victim = workers._workers[0].process
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=30)
    got = workers.verify(items, NOW)
    assert got[:2] == [None, None]  # the dead worker's half: the ingest thread verifies it
    assert got[2:] == [inline(node, d) for d, _ in items[2:]]
    assert workers.restarts == 1
    assert workers.verify(items, NOW) == [inline(node, d) for d, _ in items]


def test_workers_exit_when_the_collector_is_killed(tmp_path):
    """SIGKILL gives the collector no chance to stop its workers: their pipes' EOF does."""
    script = textwrap.dedent(
        """
        import sys
        from flopwatch.collector.ingest.workers import VerifyWorkers
        from flopwatch.limits import DEFAULT_LIMITS
        w = VerifyWorkers(2, DEFAULT_LIMITS)
        print(" ".join(str(x.process.pid) for x in w._workers), flush=True)
        sys.stdin.read()  # until killed
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    handles = [os.pidfd_open(pid) for pid in pids]
    parent.kill()
    parent.wait()
    try:
        for fd in handles:
            ready, _, _ = select.select([fd], [], [], 60)  # readable once the process exits
            assert ready, "a verify worker outlived the collector"
    finally:
        for fd in handles:
            os.close(fd)
        if parent.stdin is not None:
            parent.stdin.close()
        parent.stdout.close()


# -- the ingestor takes a record verified ahead only under the key it trusts ---------------------


def test_a_record_verified_ahead_under_the_trusted_key_is_not_verified_again(
    db_path, make_ingestor, monkeypatch
):
    store = SQLiteStore(db_path)
    node = Node(gpus=2)
    store.enroll(node.public_raw, node.node_id)
    envs = node.envelopes(3)
    ahead = [Submission(d, node.public_raw, inline(node, d)) for d in envs]

    def refuse(*_a, **_kw):
        raise AssertionError("verified again on the ingest thread")

    ingestor = make_ingestor(store)
    monkeypatch.setattr(ingest_module.RecordVerifier, "verify", refuse)
    assert statuses(ingestor.ingest_from(ahead)) == ["accepted"] * 3
    assert ingestor.snapshot().verified_ahead == 3
    monkeypatch.undo()
    expected = {node.job: [0, 0]}
    for d in envs:
        for c in inline(node, d).contributions:
            expected[node.job][0] += c.flops_estimate
            expected[node.job][1] += c.flops_upper
    assert totals_of(store) == expected
    store.close()


def test_a_record_verified_ahead_counts_for_nothing_once_its_key_is_revoked(db_path, make_ingestor):
    store = SQLiteStore(db_path)
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    store.revoke(node.key_id)
    data = node.envelope()
    ingestor = make_ingestor(store)
    [ack] = ingestor.ingest_from([Submission(data, node.public_raw, inline(node, data))])
    assert (ack.status, ack.reason) == ("rejected", "revoked_key")
    assert ingestor.snapshot().verified_ahead == 0
    assert totals_of(store) == {}
    store.close()


def test_a_record_verified_ahead_under_a_key_awaiting_approval_is_answered_retry(
    db_path, make_ingestor
):
    store = SQLiteStore(db_path)
    node = Node()
    data = node.envelope()
    ingestor = make_ingestor(store)
    [ack] = ingestor.ingest_from([Submission(data, node.public_raw, inline(node, data))])
    assert (ack.status, ack.reason) == ("retry", "unknown_key")
    assert totals_of(store) == {}
    store.close()


def test_a_record_verified_ahead_under_another_key_than_the_trusted_one_is_verified_again(
    db_path, make_ingestor
):
    """Node A's record, signed by A (presented, not enrolled) and also by enrolled key B. The
    worker verified it under A; the ingest thread trusts only B, so it verifies again under B,
    which the payload does not name."""
    store = SQLiteStore(db_path)
    a, b = Node("node-a"), Node("node-b")
    store.enroll(b.public_raw, b.node_id)
    signed = a.env()
    message = pae(signed.payload_type, signed.payload)
    both = replace(signed, signatures=(*signed.signatures, (b.key_id, b.key.sign(message))))
    data = both.to_bytes()
    ahead = verify_presented(VerifyJob(data, a.public_raw, NOW), DEFAULT_LIMITS)
    assert ahead is not None and ahead.key_id == a.key_id
    ingestor = make_ingestor(store)
    [ack] = ingestor.ingest_from([Submission(data, a.public_raw, ahead)])
    assert (ack.status, ack.reason) == ("rejected", "key_mismatch")
    assert ingestor.snapshot().verified_ahead == 0
    assert totals_of(store) == {}
    store.close()


# -- configuration ---------------------------------------------------------------------------


def test_verify_workers_auto_is_one_per_cpu_at_most_four_and_none_on_one_cpu(monkeypatch):
    for cpus, want in ((1, 0), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr(config_module, "usable_cpus", lambda n=cpus: n)
        assert parse_verify_workers("auto") == want
    assert parse_verify_workers("0") == 0
    assert parse_verify_workers("7") == 7
    for bad in ("-1", "65", "many", ""):
        with pytest.raises(ConfigError, match="--verify-workers"):
            parse_verify_workers(bad)


def cgroup_tree(tmp_path, proc_cgroup: str, files: dict[str, str]):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(proc_cgroup)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root, proc


@pytest.mark.parametrize(
    ("proc_cgroup", "files", "want"),
    [
        # cgroup v2, a container limited to 2.5 CPUs under an unlimited parent: 3
        (
            "0::/kubepods/pod1/c1\n",
            {"kubepods/pod1/c1/cpu.max": "250000 100000\n", "kubepods/cpu.max": "max 100000\n"},
            3,
        ),
        # v2, the parent's limit is the tighter one: 1
        (
            "0::/kubepods/pod1/c1\n",
            {"kubepods/pod1/c1/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "50000 100000"},
            1,
        ),
        # cgroup v1, CFS quota of 1.5 CPUs: 2
        (
            "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            2,
        ),
        # v1 without a quota, and nothing readable at all: the affinity (8)
        (
            "3:cpu,cpuacct:/\n",
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            8,
        ),
        ("garbage\n", {}, 8),
    ],
)
def test_usable_cpus_honour_a_container_cpu_limit(tmp_path, monkeypatch, proc_cgroup, files, want):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    root, proc = cgroup_tree(tmp_path, proc_cgroup, files)
    assert usable_cpus(root, proc) == want
