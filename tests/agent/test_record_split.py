"""RecordBuilder keeps every signed envelope within `max_record_bytes`: a batch too large for one
record becomes consecutive records of the chain, with the same intervals, figures and totals;
one GPU-interval always fits (jobs past what fits go to the unattributed job); hardware
bindings that do not fit wait for the next record, over that record's own nonce."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from flopwatch.agent.backends.base import (
    BindingStatus,
    GpuReading,
    HardwareBinding,
    ProcessShare,
)
from flopwatch.agent.backends.sim import SIM_PID_BASE, SimBackend
from flopwatch.agent.records import (
    MAX_RECORD_BYTES,
    MIN_RECORD_BYTES,
    ChainHead,
    RecordBuilder,
    fold_jobs,
)
from flopwatch.attribution import UNATTRIBUTED, Attribution, JobWindow
from flopwatch.binding import (
    MAX_CEC_REPORT_BYTES,
    MAX_CERT_CHAIN_BYTES,
    MAX_REPORT_BYTES,
    binding_nonce_of,
)
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.factory import open_store
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey, public_raw
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import Precision
from flopwatch.tlog.tiles import MAX_ENTRY_BYTES
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord

START = 1_700_000_000 * 10**9
SEC = 10**9
UNATTRIBUTED_ID = "unattributed:test/node-1"
Rounds = list[tuple[Sequence[GpuReading], Sequence[JobWindow]]]


def builder(key: SigningKey, **kw: object) -> RecordBuilder:
    return RecordBuilder(
        node_id="node-1",
        cluster="test",
        signer=key,
        head=ChainHead(),
        now_ns=lambda: START,
        unattributed_id=UNATTRIBUTED_ID,
        **kw,  # type: ignore[arg-type]
    )


def sim_rounds(gpus: int, rounds: int, **kw: object) -> Rounds:
    """`rounds` sampling rounds of `gpus` simulated H100s; GPUs split between two jobs."""
    sim = SimBackend(gpus, seed=7, start_ns=START, **kw)  # type: ignore[arg-type]
    windows = [
        JobWindow(f"manual:test/job-{n % 2}", SIM_PID_BASE + n, 0, None, Precision.BF16)
        for n in range(gpus)
    ]
    out: Rounds = []
    for _ in range(rounds):
        readings = sim.next_readings()
        assert readings is not None
        out.append((readings, windows))
    return out


def verify_chain(key: SigningKey, envelopes: Sequence[Envelope]) -> list[VerifiedRecord]:
    """Verify each record and that they follow one another in the chain."""
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    records = [verifier.verify_bytes(e.to_bytes()) for e in envelopes]
    previous = b""
    for n, r in enumerate(records, start=1):
        assert (r.sequence, r.previous_digest) == (n, previous)
        previous = r.digest
    return records


def intervals_of(records: Sequence[VerifiedRecord]) -> list[tuple[object, ...]]:
    """Every GPU-interval the records hold, named by device rather than by slot."""
    out = []
    for r in records:
        att = r.attestation
        for iv in att.intervals:
            gpu = att.gpus[iv.gpu]
            jobs = tuple((j.job_id, j.share_ppm, j.flops_estimate, j.flops_upper) for j in iv.jobs)
            out.append(
                (gpu.uuid, gpu.mig_instance, iv.start_unix_ns, iv.end_unix_ns, iv.flops_upper, jobs)
            )
    return out


def collector_totals(tmp_path: Path, key: SigningKey, envelopes: Sequence[Envelope]) -> object:
    """What a collector that accepts every envelope counts for each job and GPU."""
    tmp_path.mkdir()
    store = open_store(f"sqlite:{tmp_path / 'c.db'}", now_ns=lambda: START, create=True)
    try:
        store.enroll(public_raw(key.public_key), "node-1")
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: START)
        acks = ingestor.ingest([e.to_bytes() for e in envelopes])
        assert {a.status for a in acks} == {"accepted"}
        jobs = {
            t.job_id: (t.flops_estimate, t.flops_upper, t.gpu_intervals)
            for t in ingestor.job_totals()
        }
        gpus = {
            (g.gpu, g.flops_estimate, g.flops_upper, g.gpu_intervals) for g in store.gpu_totals()
        }
        return jobs, gpus
    finally:
        store.close()


def test_eight_gpus_times_a_hundred_rounds_split_into_records_under_the_limit(
    tmp_path: Path,
) -> None:
    rounds = sim_rounds(8, 100)
    key = SigningKey.generate()
    split = builder(key).build_records(rounds)
    sizes = [len(e.to_bytes()) for e in split]
    assert len(split) > 1
    assert max(sizes) <= MAX_RECORD_BYTES < MAX_ENTRY_BYTES
    # Full records: none but the last leaves room for one more GPU-interval (~200 bytes).
    assert all(s > MAX_RECORD_BYTES - 400 for s in sizes[:-1])
    records = verify_chain(key, split)

    # The same readings in one record (allowed up to the verifier's 1 MiB): the same
    # intervals, each with its own counters and attribution, and the same collector totals.
    whole_key = SigningKey.generate()
    whole = builder(whole_key, max_record_bytes=DEFAULT_LIMITS.max_envelope_bytes)
    [one] = whole.build_records(rounds)
    assert len(one.to_bytes()) > MAX_ENTRY_BYTES
    [record] = verify_chain(whole_key, [one])
    assert sorted(intervals_of(records)) == sorted(intervals_of([record]))
    assert len(intervals_of(records)) == 800
    assert collector_totals(tmp_path / "split", key, split) == collector_totals(
        tmp_path / "whole", whole_key, [one]
    )


def test_a_node_with_more_devices_than_a_record_may_name_splits_one_round() -> None:
    """100 devices: one round is more than the verifier's 64 GPUs per record (and, with many
    jobs, more than the bytes), so it is split per GPU-interval."""
    rounds = sim_rounds(100, 2)
    key = SigningKey.generate()
    envelopes = builder(key).build_records(rounds)
    records = verify_chain(key, envelopes)
    assert len(records) >= 4
    assert all(len(r.attestation.gpus) <= DEFAULT_LIMITS.max_gpus_per_attestation for r in records)
    assert len(intervals_of(records)) == 200
    # Each device's two intervals come in order across records.
    ends = Counter(iv[0] for iv in intervals_of(records))
    assert set(ends.values()) == {2}


def test_build_rounds_refuses_a_batch_that_needs_two_records_and_signs_nothing() -> None:
    key = SigningKey.generate()
    b = builder(key)
    with pytest.raises(ValueError, match="more than one record"):
        b.build_rounds(sim_rounds(8, 100))
    assert b.head == ChainHead()
    [env] = b.build_records(sim_rounds(8, 1))
    assert verify_chain(key, [env])[0].sequence == 1


def test_given_gaps_name_the_right_device_in_whichever_record_holds_them() -> None:
    rounds = sim_rounds(8, 100)
    gpus = [r.gpu for r in rounds[0][0]]
    lost = [
        pb.Gap(
            gpu=slot,
            start_unix_ns=START - 10 * SEC,
            end_unix_ns=START,
            reason=pb.GAP_REASON_SPOOL_OVERFLOW,
            detail="x" * 200,
            lost_sequence_first=1,
            lost_sequence_last=2,
        )
        for slot in range(8)
    ]
    key = SigningKey.generate()
    records = verify_chain(key, builder(key).build_records(rounds, lost))
    named = [r.attestation.gpus[g.gpu].uuid for r in records for g in r.attestation.gaps]
    assert named == [g.uuid for g in gpus]


def test_max_record_bytes_is_bounded() -> None:
    key = SigningKey.generate()
    with pytest.raises(ConfigError, match="max_record_bytes must be 32768 to 1048576"):
        builder(key, max_record_bytes=MIN_RECORD_BYTES - 1)
    with pytest.raises(ConfigError, match="max_record_bytes"):
        builder(key, max_record_bytes=DEFAULT_LIMITS.max_envelope_bytes + 1)


# -- one GPU-interval always fits ---------------------------------------------------------------
def many_jobs_reading(jobs: int) -> tuple[list[GpuReading], list[JobWindow]]:
    [reading] = sim_rounds(1, 1)[0][0]
    procs = tuple(ProcessShare(100 + n, (n + 1) / (jobs * (jobs + 1) / 2)) for n in range(jobs))
    reading = GpuReading(**{**reading.__dict__, "processes": procs})
    return [reading], []


def test_more_jobs_than_an_interval_may_hold_fold_the_smallest_into_unattributed() -> None:
    readings, _ = many_jobs_reading(100)
    windows = [JobWindow(f"manual:test/j{n:03d}", 100 + n, 0) for n in range(100)]
    key = SigningKey.generate()
    b = builder(key)
    [record] = verify_chain(key, b.build_records([(readings, windows)]))
    [iv] = record.attestation.intervals
    assert len(iv.jobs) == DEFAULT_LIMITS.max_jobs_per_interval
    kept = {j.job_id for j in iv.jobs}
    # The 63 largest shares (jobs 37..99) stay; the 37 smallest are the unattributed job's.
    assert kept == {f"manual:test/j{n:03d}" for n in range(37, 100)} | {UNATTRIBUTED_ID}
    assert sum(j.share_ppm for j in iv.jobs) == 1_000_000
    assert b.folded_intervals == 1

    # The device's upper bound and (all precisions unspecified) its estimate are those of the
    # same reading attributed to one job (the estimate summed over 64 jobs' roundings).
    alone = builder(SigningKey.generate()).build_records([(readings, [])])
    [whole] = pb.Attestation.FromString(alone[0].payload).intervals
    assert [j.job_id for j in whole.jobs] == [UNATTRIBUTED_ID]
    assert iv.flops_upper == whole.flops_upper
    assert abs(iv.flops_estimate - whole.flops_estimate) <= len(iv.jobs)


def test_an_interval_of_jobs_with_the_longest_ids_is_folded_to_fit_the_record() -> None:
    """64 jobs whose ids are 250 four-byte characters (the worst case the verifier allows):
    about 1,000 bytes each, 64 KiB in all; the smallest go to the unattributed job until the
    interval fits a record."""
    readings, _ = many_jobs_reading(64)
    ids = [f"manual:test/{n:02d}" + "\U0001f600" * 238 for n in range(64)]
    assert all(len(i) <= DEFAULT_LIMITS.max_identifier_chars for i in ids)
    windows = [JobWindow(ids[n], 100 + n, 0) for n in range(64)]
    key = SigningKey.generate()
    [env] = builder(key).build_records([(readings, windows)])
    assert len(env.to_bytes()) <= MAX_RECORD_BYTES
    [record] = verify_chain(key, [env])
    [iv] = record.attestation.intervals
    assert 40 < len(iv.jobs) < 64
    assert UNATTRIBUTED_ID in {j.job_id for j in iv.jobs}
    kept = sorted(int(j.job_id[12:14]) for j in iv.jobs if j.job_id != UNATTRIBUTED_ID)
    assert kept == list(range(64 - len(kept), 64))  # the largest shares


def test_fold_jobs_merges_into_an_existing_unattributed_share() -> None:
    nobody = Attribution(UNATTRIBUTED_ID, 100, Precision.UNSPECIFIED, UNATTRIBUTED)
    shares = [
        Attribution("a", 500_000, Precision.BF16, "manual"),
        nobody,
        Attribution("b", 499_900, Precision.FP8, "manual"),
    ]
    assert fold_jobs(shares, 3, UNATTRIBUTED_ID) == shares
    assert fold_jobs(shares, 1, UNATTRIBUTED_ID) == [
        shares[0],
        Attribution(UNATTRIBUTED_ID, 500_000, Precision.UNSPECIFIED, UNATTRIBUTED),
    ]
    assert fold_jobs(shares, 0, UNATTRIBUTED_ID) == [
        Attribution(UNATTRIBUTED_ID, 1_000_000, Precision.UNSPECIFIED, UNATTRIBUTED)
    ]


# -- hardware bindings ---------------------------------------------------------------------------
class LargeReports:
    """Reports of the largest sizes NVML returns (about 17 KiB per GPU), over the nonce given."""

    def __init__(self, readings: Sequence[GpuReading]) -> None:
        self.gpus = [r.gpu for r in readings]
        self.asked = 0

    def hardware_bindings(self, nonce: bytes) -> list[HardwareBinding]:
        self.asked += 1
        return [
            HardwareBinding(
                g,
                BindingStatus.REPORT,
                report=nonce + b"r" * (MAX_REPORT_BYTES - len(nonce)),
                cec_report=b"c" * MAX_CEC_REPORT_BYTES,
                cert_chain=b"x" * MAX_CERT_CHAIN_BYTES,
            )
            for g in self.gpus
        ]


def test_bindings_that_do_not_fit_follow_in_the_next_records_each_over_its_own_nonce() -> None:
    rounds = sim_rounds(8, 3)
    hardware = LargeReports(rounds[0][0])
    key = SigningKey.generate()
    b = builder(key, hardware=hardware)
    envelopes = [e for batch in rounds for e in b.build_records([batch])]
    assert all(len(e.to_bytes()) <= MAX_RECORD_BYTES for e in envelopes)
    records = verify_chain(key, envelopes)
    bound = [
        (r.sequence, r.attestation.gpus[x.gpu].uuid)
        for r in records
        for x in r.attestation.bindings
    ]
    assert sorted(uuid for _, uuid in bound) == sorted(g.uuid for g in hardware.gpus)  # once each
    assert len({seq for seq, _ in bound}) >= 3  # three reports per record at most
    for r in records:
        for x in r.attestation.bindings:
            assert x.status == pb.BINDING_STATUS_REPORT
            assert x.nonce == binding_nonce_of(r.attestation) == x.report[:32]
    asked = hardware.asked
    b.build_records(sim_rounds(8, 1))
    assert hardware.asked == asked  # all bound: not asked again
