"""Network faults between agents and collector: connections cut, and a half-open partition.
Job, run and account totals are checked alike.

Agents reach the collector through a TCP proxy (tests/faults/tcp_proxy.py). Cuts land at seeded
moments in terms of contributions committed, so acks are lost after commits and envelopes
mid-flight; a stall keeps every socket open while nothing flows, longer than the agents' ack
timeout, as a partition does. After the network heals the totals equal what the agents signed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.faults.evidence import missing_sequences, unaccounted
from tests.faults.fleet import contributions, job_totals
from tests.faults.lab import FaultLab
from tests.faults.processes import (
    AgentProcess,
    CollectorProcess,
    Progress,
    accounts_json,
    committed,
    jobs_json,
    runs_json,
)
from tests.faults.tcp_proxy import TcpProxy
from tests.faults.waits import wait_until

pytestmark = pytest.mark.faults

SEED = 7_1_2024
CUTS = 8
ACK_TIMEOUT_S = 1.0


def finish(lab: FaultLab, collector: CollectorProcess, agents: list[AgentProcess]) -> None:
    """Every agent drains and exits cleanly; the totals and the evidence are exact."""
    for a in agents:
        assert a.wait(timeout=120) == 0, a.tail()
    assert jobs_json(collector.address) == lab.expected
    # Runs and accounts, exactly once too: the run of two jobs on every node, its account, and
    # the evaluation job's own run of no account.
    assert set(lab.expected_runs) == {("acme", "model-7b"), ("", "eval-70b")}
    assert runs_json(collector.address) == lab.expected_runs
    assert accounts_json(collector.address) == lab.expected_accounts
    assert collector.stop() == 0
    held = lab.held(collector)
    assert job_totals(held) == lab.expected
    assert all(not m for m in missing_sequences(held).values())
    assert all(not holes for holes in unaccounted(held).values())


def test_connections_cut_repeatedly_lose_and_double_nothing(
    make_lab: Callable[..., FaultLab],
) -> None:
    lab = make_lab(nodes=3, intervals=200)
    total = contributions(r for records in lab.offline.values() for r in records)
    collector = lab.collector()
    collector.start()
    with TcpProxy("127.0.0.1", collector.port) as proxy:
        agents = lab.agents(f"127.0.0.1:{proxy.port}")
        for a in agents:
            a.start()
        progress = Progress(collector.address)  # straight to the collector, not via the proxy
        try:
            rng = random.Random(SEED)
            for moment in sorted(rng.sample(range(total // 10, total * 8 // 10), CUTS)):
                wait_until(committed(progress, moment, agents), f"{moment} contributions committed")
                wait_until(lambda: proxy.open_connections, "an agent connected")
                assert proxy.drop() >= 1
        finally:
            progress.close()
        finish(lab, collector, agents)
        assert proxy.accepted >= CUTS + len(agents)  # every cut was followed by reconnects


def test_half_open_partition_longer_than_ack_timeout_loses_nothing(
    make_lab: Callable[..., FaultLab],
) -> None:
    lab = make_lab(nodes=3, intervals=200)
    total = contributions(r for records in lab.offline.values() for r in records)
    collector = lab.collector()
    collector.start()
    with TcpProxy("127.0.0.1", collector.port) as proxy:
        agents = lab.agents(f"127.0.0.1:{proxy.port}", ["--ack-timeout", str(ACK_TIMEOUT_S)])
        for a in agents:
            a.start()
        progress = Progress(collector.address)
        try:
            wait_until(committed(progress, total // 4, agents), "a quarter of the run committed")
            proxy.stall()
            stalled_at = proxy.accepted
            # Every agent gives up on its silent stream (no ack within the timeout) and opens
            # a new one, which the partition swallows too; then they all do it again.
            wait_until(
                lambda: proxy.accepted >= stalled_at + len(agents),
                "every agent to give up its stream",
            )
            frozen = progress()
            wait_until(
                lambda: proxy.accepted >= stalled_at + 2 * len(agents),
                "every agent to give up a second stream",
            )
            assert progress() == frozen  # nothing got through the partition
            assert frozen is not None and frozen < total
            proxy.resume()
        finally:
            progress.close()
        finish(lab, collector, agents)
    for a in agents:
        assert "no ack for" in a.text() or "stalled" in a.text()
