"""The whole agent: replay trace -> signed chain -> spool -> fake collector; restarts."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.agent.backends.base import GpuReading
from flopwatch.agent.backends.replay import ReplayBackend
from flopwatch.agent.backends.sim import SimBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.records import MAX_RECORD_BYTES
from flopwatch.agent.service import Agent, make_backend, resume_head, run_agent
from flopwatch.agent.spool.store import ChainRef, RecoveryReport, Spool, SpoolLoss
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord
from tests.agent.agent_fakes import (
    REJECTED,
    T0,
    FakeCollector,
    start_sync,
    write_jobs,
    write_trace,
)

INTERVALS = 6


@pytest.fixture
def collector() -> Iterator[tuple[FakeCollector, int]]:
    fake = FakeCollector()
    server, port = start_sync(fake)
    yield fake, port
    server.stop(None)


def config_for(tmp_path: Path, port: int, **kw: object) -> AgentConfig:
    trace = write_trace(tmp_path / "trace.jsonl", INTERVALS)
    args: dict[str, object] = {
        "collector": f"127.0.0.1:{port}",
        "backend": f"replay:{trace}",
        "state_dir": tmp_path / "state",
        "node_id": "node-test",
        "cluster": "test",
        "jobs_file": write_jobs(tmp_path / "jobs.json", INTERVALS),
        "replay_speed": None,
        "insecure": True,
        "drain_timeout_s": 30.0,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    return AgentConfig(**(args | kw))  # type: ignore[arg-type]


def held_records(fake: FakeCollector, key: SigningKey) -> list[VerifiedRecord]:
    """The collector's records, verified against the node key, by sequence."""
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    return [verifier.verify_bytes(fake.held[s]) for s in sorted(fake.held)]


def test_replay_end_to_end_then_restart_resumes_the_chain(
    tmp_path: Path, collector: tuple[FakeCollector, int], caplog: pytest.LogCaptureFixture
) -> None:
    fake, port = collector
    config = config_for(tmp_path, port)
    caplog.set_level(logging.INFO)
    assert run_agent(config) == 0
    assert (config.key_path.stat().st_mode & 0o777) == 0o600
    key = SigningKey.load(config.key_path)
    assert any(f"created node key {key.key_id}" in r.message for r in caplog.records)
    assert fake.public_keys == [key.public_key.public_bytes_raw().hex()]

    assert fake.arrivals == list(range(1, INTERVALS + 1))  # all, in order, once
    records = held_records(fake, key)
    assert [r.sequence for r in records] == list(range(1, INTERVALS + 1))
    assert records[0].previous_digest == b""
    for before, rec in itertools.pairwise(records):
        assert rec.previous_digest == before.digest
    assert all(r.node_id == "node-test" and len(r.gpu_intervals) == 1 for r in records)
    assert {c.job_id for r in records for c in r.contributions} == {"test:cluster/job-1"}

    caplog.clear()
    assert run_agent(config) == 0  # same state dir: same key, the chain goes on
    assert not any("created node key" in r.message for r in caplog.records)
    assert fake.arrivals == list(range(1, 2 * INTERVALS + 1))
    after = held_records(fake, key)[INTERVALS]
    assert after.sequence == INTERVALS + 1 and after.previous_digest == records[-1].digest


def test_corrupt_spool_tail_signs_a_gap_and_skips_possibly_held_sequences(
    tmp_path: Path, collector: tuple[FakeCollector, int]
) -> None:
    fake, port = collector
    config = config_for(tmp_path, port)
    assert run_agent(config) == 0
    newest = sorted(config.spool_dir.glob("seg-*.log"))[-1]
    newest.write_bytes(newest.read_bytes()[:-5])  # record 6, the last, is damaged on disk

    assert run_agent(config) == 0
    records = {r.sequence: r for r in held_records(fake, SigningKey.load(config.key_path))}
    # 6 may be held by the collector with content the agent no longer has, and 7 cannot
    # name 6's digest: the chain goes on at 8, linked to 5, with a signed gap for 6..7.
    assert INTERVALS + 1 not in records
    first = records[INTERVALS + 2]
    assert first.previous_digest == records[INTERVALS - 1].digest
    [gap] = first.attestation.gaps
    assert gap.reason == pb.GAP_REASON_SPOOL_CORRUPT
    assert (gap.lost_sequence_first, gap.lost_sequence_last) == (INTERVALS, INTERVALS + 1)


def test_spool_overflow_becomes_a_signed_gap(tmp_path: Path) -> None:
    # A spool that holds one record: each append drops the one before (no collector runs).
    config = config_for(tmp_path, 1, drain_timeout_s=0.05, spool_segment_bytes=1, spool_max_bytes=2)
    assert run_agent(config) == 1
    spool = Spool(config.spool_dir, max_bytes=2, segment_bytes=1)
    [(seq, data)] = spool.pending()
    # Appending record 6 dropped 5, and with it the report of 1 and 3 that 5 carried: no
    # stored record reports them now, the ack state does.
    losses = [(x.first, x.last, x.reason) for x in spool.recovery.losses]
    assert losses == [(1, 1, "overflow"), (3, 3, "overflow"), (5, 5, "overflow")]
    spool.close()
    key = SigningKey.load(config.key_path)
    rec = RecordVerifier(trusted_keys={key.key_id: key.public_key}).verify_bytes(data)
    assert seq == INTERVALS
    # Appending 5 dropped 4, and the report of 2 that 4 carried: record 6 reports both.
    again, gap = rec.attestation.gaps
    assert (again.lost_sequence_first, again.lost_sequence_last) == (2, 2)
    assert (again.start_unix_ns, again.end_unix_ns) == ((T0 + 1) * 10**9, (T0 + 2) * 10**9)
    assert gap.reason == pb.GAP_REASON_SPOOL_OVERFLOW
    assert (gap.lost_sequence_first, gap.lost_sequence_last) == (4, 4)
    # The time record 4 covered: its interval (the trace's 4th); record 2's is in its own gap.
    assert (gap.start_unix_ns, gap.end_unix_ns) == ((T0 + 3) * 10**9, (T0 + 4) * 10**9)


def test_drain_timeout_exits_1_and_keeps_records(tmp_path: Path) -> None:
    config = config_for(tmp_path, 1, drain_timeout_s=0.05)  # nothing listens on port 1
    assert run_agent(config) == 1
    spool = Spool(config.spool_dir, max_bytes=1 << 20, segment_bytes=4096)
    assert spool.depth() == INTERVALS
    spool.close()


def test_rejected_records_exit_1(tmp_path: Path) -> None:
    fake = FakeCollector(decide=lambda seq, attempt: REJECTED)
    server, port = start_sync(fake)
    try:
        assert run_agent(config_for(tmp_path, port)) == 1
    finally:
        server.stop(None)


class StoppingBackend(ReplayBackend):
    """Sets the stop event after `after` batches, as a signal handler would."""

    def __init__(self, path: Path, stop: threading.Event, after: int) -> None:
        super().__init__(path, speed=None)
        self._stop, self._after, self._n = stop, after, 0

    def next_readings(self) -> list[GpuReading] | None:
        self._n += 1
        if self._n > self._after:
            self._stop.set()
        return super().next_readings()


def test_stop_event_ends_the_agent_and_keeps_the_spool(tmp_path: Path) -> None:
    config = config_for(tmp_path, 1)
    stop = threading.Event()
    backend = StoppingBackend(tmp_path / "trace.jsonl", stop, after=2)
    assert Agent(config, backend=backend).run(stop) == 0
    spool = Spool(config.spool_dir, max_bytes=1 << 20, segment_bytes=4096)
    assert spool.depth() == 3  # batches 1-2, and the one read when the stop came
    spool.close()


def test_bad_backend_and_tls_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        run_agent(config_for(tmp_path, 1, backend="sim:zero"))
    with pytest.raises(ConfigError, match="unknown simulator profile 'b200'; use one of a100,"):
        make_backend(config_for(tmp_path, 1, backend="sim:2:b200"))
    with pytest.raises(ConfigError, match="max_record_bytes must be 32768 to"):
        Agent(config_for(tmp_path, 1, max_record_bytes=1024))


@pytest.mark.parametrize(
    ("backend", "gpu_name", "devices"),
    [
        ("sim:2", "NVIDIA H100 80GB HBM3 (simulated)", 2),
        ("sim:2:a100", "NVIDIA A100-SXM4-80GB (simulated)", 2),
        ("sim:1:h100-mig", "NVIDIA H100 80GB HBM3 (simulated) MIG 0", None),
    ],
)
def test_sim_backend_profiles_are_chosen_by_name(
    tmp_path: Path, backend: str, gpu_name: str, devices: int | None
) -> None:
    sim = make_backend(config_for(tmp_path, 1, backend=backend))
    try:
        gpus = sim.gpus()
        assert gpus[0].name == gpu_name
        if devices is not None:
            assert len(gpus) == devices
        else:
            assert len(gpus) > 1 and all(g.mig_instance for g in gpus)  # one per MIG instance
    finally:
        sim.close()
    with pytest.raises(ConfigError, match="mTLS needs --tls-ca, --tls-cert and --tls-key"):
        run_agent(config_for(tmp_path, 1, insecure=False))


def test_resume_head_rules() -> None:
    head = ChainRef(sequence=9, digest=b"d" * 32, end_ns=5)
    h, losses = resume_head(RecoveryReport(head=None))  # a new spool: the chain starts at 1
    assert (h.sequence, h.digest, losses) == (0, b"", [])
    h, losses = resume_head(RecoveryReport(head=head))
    assert (h.sequence, h.digest, losses) == (9, b"d" * 32, [])
    middle = SpoolLoss(3, 4, "corrupt")
    tail = SpoolLoss(10, 12, "corrupt", start_ns=5)
    h, losses = resume_head(RecoveryReport(head=head, losses=(middle, tail)))
    assert (h.sequence, h.digest) == (13, b"d" * 32)  # next record: 14
    assert [(x.first, x.last) for x in losses] == [(3, 4), (10, 13)]


def test_a_large_batch_is_sent_as_several_records_within_the_size_limit(
    tmp_path: Path, collector: tuple[FakeCollector, int]
) -> None:
    """8 GPUs x 100 rounds per record: about 200 KB of intervals, signed as consecutive records
    of at most MAX_RECORD_BYTES, every one of them sent and held."""
    fake, port = collector
    backend = SimBackend(8, start_ns=T0 * 10**9, limit=100)
    config = config_for(tmp_path, port, backend="sim:8", intervals_per_record=100)
    assert config.max_record_bytes == MAX_RECORD_BYTES
    assert Agent(config, backend=backend).run() == 0
    records = held_records(fake, SigningKey.load(config.key_path))
    assert len(records) > 1
    assert [r.sequence for r in records] == list(range(1, len(records) + 1))
    assert max(len(fake.held[r.sequence]) for r in records) <= MAX_RECORD_BYTES
    assert sum(len(r.attestation.intervals) for r in records) == 800
