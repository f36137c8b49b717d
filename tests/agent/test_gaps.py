"""Every second not measured becomes a signed gap naming its devices and interval.

Kinds: an NVML error (SAMPLING_ERROR), a profiler holding the counters (PROFILER_BUSY), the
agent not running (AGENT_RESTART) and records lost from the spool (SPOOL_OVERFLOW, also in
tests/agent/test_service.py). Each is signed, then read back through the collector's verifier.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.agent.backends.base import GapCause
from flopwatch.agent.backends.sim import PROFILES, SimBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.agent.service import Agent, loss_gaps
from flopwatch.agent.spool.store import SpoolLoss
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord
from tests.agent.agent_fakes import FakeCollector, start_sync

START = 1_700_000_000 * 10**9
SEC = 10**9
DAY = 86_400 * SEC


def builder(key: SigningKey, resumed_after_ns: int | None = None) -> RecordBuilder:
    return RecordBuilder(
        node_id="node-1",
        cluster="test",
        signer=key,
        head=ChainHead(),
        now_ns=lambda: START,
        resumed_after_ns=resumed_after_ns,
    )


def verify(key: SigningKey, env: Envelope) -> VerifiedRecord:
    return RecordVerifier(trusted_keys={key.key_id: key.public_key}).verify_bytes(env.to_bytes())


def test_nvml_error_is_a_sampling_error_gap() -> None:
    key = SigningKey.generate()
    sim = SimBackend(3, start_ns=START)
    sim.fail_next(1, "NVML: GPU is lost")
    batch = sim.next_readings()
    assert batch is not None
    rec = verify(key, builder(key).build(batch, []))
    [gap] = rec.gaps
    assert (gap.gpu_uuid, gap.start_ns, gap.end_ns) == ("GPU-sim-0-1", START, START + SEC)
    assert (gap.reason, gap.detail) == ("sampling_error", "NVML: GPU is lost")
    assert [rec.attestation.gpus[iv.gpu].uuid for iv in rec.attestation.intervals] == [
        "GPU-sim-0-0",
        "GPU-sim-0-2",
    ]


def test_profiler_holding_the_counters_is_a_profiler_gap_per_mig_instance() -> None:
    key = SigningKey.generate()
    sim = SimBackend(1, start_ns=START, profile=PROFILES["h100-mig"])
    sim.fail_next(
        2, "GPM sample failed: counters held by another client", 2, GapCause.PROFILER_BUSY
    )
    b = builder(key)
    for k in range(3):
        batch = sim.next_readings()
        assert batch is not None
        rec = verify(key, b.build(batch, []))
        gaps = [(g.gpu_uuid, g.reason) for g in rec.gaps]
        assert gaps == ([("GPU-sim-0-0", "profiler_busy")] if k < 2 else [])
        if gaps:
            [raw] = rec.attestation.gaps
            assert rec.attestation.gpus[raw.gpu].mig_instance == "MIG-sim-0-0-2"
            assert raw.reason == pb.GAP_REASON_PROFILER_BUSY


def test_restart_gap_covers_each_device_from_the_last_record_to_its_first_interval() -> None:
    key = SigningKey.generate()
    last_end = START - 3 * DAY  # down for three days: longer than any interval may be
    b = builder(key, resumed_after_ns=last_end)
    sim = SimBackend(2, start_ns=START, profile=PROFILES["h100-mig"])
    first, second = sim.next_readings(), sim.next_readings()
    assert first is not None and second is not None
    rec = verify(key, b.build(first, []))
    restart = [g for g in rec.attestation.gaps if g.reason == pb.GAP_REASON_AGENT_RESTART]
    assert sorted(g.gpu for g in restart) == list(range(6))  # every MIG instance of both GPUs
    assert {(g.start_unix_ns, g.end_unix_ns) for g in restart} == {(last_end, START)}
    assert not verify(key, b.build(second, [])).attestation.gaps  # once per start


def test_a_device_first_seen_later_gets_its_restart_gap_then() -> None:
    key = SigningKey.generate()
    b = builder(key, resumed_after_ns=START - 10 * SEC)
    sim = SimBackend(2, start_ns=START)
    first, second = sim.next_readings(), sim.next_readings()
    assert first is not None and second is not None
    # GPU 1 (a GPU without GPM waiting for its utilization sample) has no reading at first.
    one = verify(key, b.build(first[:1], []))
    two = verify(key, b.build(second, []))
    assert [g.gpu_uuid for g in one.gaps] == ["GPU-sim-0-0"]
    assert [(g.gpu_uuid, g.end_ns) for g in two.gaps] == [("GPU-sim-0-1", START + SEC)]


def test_no_restart_gap_on_a_first_start_or_when_readings_begin_before_the_last_end() -> None:
    key = SigningKey.generate()
    batch = SimBackend(1, start_ns=START).next_readings()
    assert batch is not None
    assert not verify(key, builder(key).build(batch, [])).gaps
    assert not verify(key, builder(key, resumed_after_ns=START + SEC).build(batch, [])).gaps


def test_spool_loss_gaps_name_every_device_of_the_batch() -> None:
    batch = SimBackend(1, start_ns=START, profile=PROFILES["h100-mig"]).next_readings()
    assert batch is not None
    loss = SpoolLoss(4, 6, "overflow", START - 5 * SEC, START - 2 * SEC, "spool full")
    gaps = loss_gaps([loss], batch)
    assert [g.gpu for g in gaps] == [0, 1, 2]
    assert {(g.reason, g.lost_sequence_first, g.lost_sequence_last) for g in gaps} == {
        (pb.GAP_REASON_SPOOL_OVERFLOW, 4, 6)
    }


# -- the agent itself across a restart ------------------------------------------------------------


@pytest.fixture
def collector() -> Iterator[tuple[FakeCollector, int]]:
    fake = FakeCollector()
    server, port = start_sync(fake)
    yield fake, port
    server.stop(None)


def run_sim_agent(tmp_path: Path, port: int, start_ns: int, intervals: int) -> None:
    config = AgentConfig(
        collector=f"127.0.0.1:{port}",
        backend="sim:2",
        state_dir=tmp_path / "state",
        node_id="node-test",
        cluster="test",
        insecure=True,
        drain_timeout_s=30.0,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
    )
    backend = SimBackend(2, start_ns=start_ns, limit=intervals)
    assert Agent(config, backend=backend).run() == 0


def test_agent_signs_the_downtime_between_two_runs(
    tmp_path: Path, collector: tuple[FakeCollector, int]
) -> None:
    fake, port = collector
    run_sim_agent(tmp_path, port, START, 3)  # covers [START, START + 3 s)
    run_sim_agent(tmp_path, port, START + 60 * SEC, 2)  # back a minute later
    key = SigningKey.load(tmp_path / "state" / "node.key")
    records = [verify(key, Envelope.from_bytes(fake.held[s])) for s in sorted(fake.held)]
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5]
    gaps = [(g.gpu_uuid, g.start_ns, g.end_ns, g.reason) for r in records for g in r.gaps]
    assert gaps == [
        ("GPU-sim-0-0", START + 3 * SEC, START + 60 * SEC, "agent_restart"),
        ("GPU-sim-0-1", START + 3 * SEC, START + 60 * SEC, "agent_restart"),
    ]
    assert records[3].gaps and not records[4].gaps
    # Hardware binding: the first record of each start says why there is no GPU report.
    assert [len(r.attestation.bindings) for r in records] == [2, 0, 0, 2, 0]
