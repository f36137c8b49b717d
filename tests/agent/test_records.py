"""RecordBuilder: simulated GPUs of every kind -> signed record -> the collector's verifier.

Each profile goes through the whole path (sign, then verify with figures recomputed from the
counters): H100 with GPM, A100 without GPM (method nvml-utilization), a GPU the rate table does
not know (method unknown-rate), and an H100 in MIG mode. Hardware bindings ride in the first
record after a start.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from flopwatch.agent.backends.base import BindingStatus, GpuReading, HardwareBinding
from flopwatch.agent.backends.sim import PROFILES, SimBackend, SimGpuModel, SimProfile
from flopwatch.agent.records import (
    ChainHead,
    RecordBuilder,
    batch_devices,
    utilization_centipercent,
)
from flopwatch.attribution import ALL_GPUS, JobWindow
from flopwatch.binding import binding_nonce
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.model import Pipe, physical_peak
from flopwatch.model.flops import peak_rate_all_pipes, upper_bound
from flopwatch.model.rates import RATE_TABLE
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord

START = 1_700_000_000 * 10**9
SEC = 10**9


def builder(key: SigningKey, **kw: object) -> RecordBuilder:
    return RecordBuilder(
        node_id="node-1",
        cluster="test",
        signer=key,
        head=ChainHead(),
        now_ns=lambda: START,
        **kw,  # type: ignore[arg-type]
    )


def verify(key: SigningKey, env: Envelope) -> VerifiedRecord:
    return RecordVerifier(trusted_keys={key.key_id: key.public_key}).verify_bytes(env.to_bytes())


def readings(profile: str, n_gpus: int = 2) -> list[GpuReading]:
    batch = SimBackend(n_gpus, seed=4, start_ns=START, profile=PROFILES[profile]).next_readings()
    assert batch is not None
    return batch


def test_h100_records_use_gpm() -> None:
    key = SigningKey.generate()
    rec = verify(key, builder(key).build(readings("h100"), []))
    assert {iv.method for iv in rec.attestation.intervals} == {pb.METHOD_GPM}
    assert all(iv.utilization_centipercent == 0 for iv in rec.attestation.intervals)


def test_a100_without_gpm_signs_a_utilization_bound_the_verifier_recomputes() -> None:
    key = SigningKey.generate()
    batch = readings("a100")
    rec = verify(key, builder(key).build(batch, []))
    for r, iv in zip(batch, rec.attestation.intervals, strict=True):
        assert iv.method == pb.METHOD_NVML_UTILIZATION
        assert iv.active_sm_cycles.hmma == 0  # no pipe readings without GPM
        assert iv.utilization_centipercent == utilization_centipercent(r.utilization)
        # The bound: busy fraction x interval x SMs x max clock x every pipe's fastest rate.
        c = r.counters()
        busy = c.max_elapsed_sm_cycles * iv.utilization_centipercent
        assert iv.flops_upper == -(-busy * peak_rate_all_pipes((8, 0)) // 10_000)
        assert iv.flops_upper <= physical_peak(c)
        assert 0 < iv.flops_estimate < iv.flops_upper


def test_unknown_gpu_is_bounded_by_the_fastest_known_rate_never_guessed() -> None:
    key = SigningKey.generate()
    batch = readings("unknown")
    rec = verify(key, builder(key).build(batch, []))
    for r, iv in zip(batch, rec.attestation.intervals, strict=True):
        assert iv.method == pb.METHOD_UNKNOWN_RATE
        assert iv.flops_upper == upper_bound(r.counters())
        assert iv.flops_estimate == iv.flops_upper  # no rate to estimate with: the bound, labelled
        # At least what the fastest GPU in the table could have done with these counters.
        for cc in RATE_TABLE:
            assert iv.flops_upper >= upper_bound(r.counters()._replace(cc=cc))


def test_unknown_gpu_without_gpm_is_bounded_from_utilization_at_the_fastest_known_rates() -> None:
    v100 = SimGpuModel("Tesla V100-SXM2-32GB (simulated)", 80, (7, 0), 1530, gpm=False)
    sim = SimBackend(1, start_ns=START, profile=SimProfile(gpu=v100, clock_mhz=(1000, 1530)))
    batch = sim.next_readings()
    assert batch is not None
    key = SigningKey.generate()
    [iv] = verify(key, builder(key).build(batch, [])).attestation.intervals
    assert iv.method == pb.METHOD_NVML_UTILIZATION
    fastest = sum(max(r.fastest(p) for r in RATE_TABLE.values()) for p in Pipe)
    busy = batch[0].counters().max_elapsed_sm_cycles * iv.utilization_centipercent
    assert iv.flops_upper == -(-busy * fastest // 10_000)
    # No rate to pick a precision from: the busy time as matrix work at the fastest HMMA rate
    # any known GPU has, at the maximum clock.
    hmma = max(r.fastest(Pipe.HMMA) for r in RATE_TABLE.values())
    assert iv.flops_estimate == pytest.approx(busy * hmma / 10_000, rel=1e-3)
    assert iv.flops_estimate < iv.flops_upper


def test_mig_instances_are_separate_devices_in_the_record() -> None:
    key = SigningKey.generate()
    batch = readings("h100-mig")
    rec = verify(key, builder(key).build(batch, []))
    gpus = rec.attestation.gpus
    instances = [(g.uuid, g.mig_instance, g.sm_count) for g in gpus]
    assert instances == [(r.gpu.uuid, r.gpu.mig_instance, r.gpu.sm_count) for r in batch]
    assert len({(u, m) for u, m, _ in instances}) == 6 and len({u for u, _, _ in instances}) == 2
    # Intervals of instances of one GPU cover the same time without counting as an overlap.
    assert len({(iv.start_unix_ns, iv.end_unix_ns) for iv in rec.attestation.intervals}) == 1
    assert [iv.gpu for iv in rec.attestation.intervals] == list(range(6))
    assert all(iv.energy_mj == 0 for iv in rec.attestation.intervals)


def test_utilization_is_rounded_up() -> None:
    assert utilization_centipercent(0.42) >= 4200
    assert utilization_centipercent(0.123456) == 1235
    assert utilization_centipercent(1.0) == 10_000 and utilization_centipercent(None) == 0
    assert utilization_centipercent(1.5) == 10_000


def test_batch_devices_keep_first_seen_order_per_instance() -> None:
    batch = readings("h100-mig", 1)
    assert batch_devices(batch + batch[:1]) == [r.gpu for r in batch]


# -- hardware binding ------------------------------------------------------------------------------


class FakeBinder:
    """Answers every binding request with a 'report' over the nonce it was given (or `nonce`)."""

    def __init__(self, gpus: Sequence[GpuReading], nonce: bytes | None = None) -> None:
        self.gpus = {r.gpu.uuid: r.gpu for r in gpus}
        self.nonce = nonce
        self.asked: list[bytes] = []

    def hardware_bindings(self, nonce: bytes) -> list[HardwareBinding]:
        self.asked.append(nonce)
        return [
            HardwareBinding(g, BindingStatus.REPORT, report=b"report:" + (self.nonce or nonce))
            for g in self.gpus.values()
        ]


def test_the_first_record_after_a_start_binds_the_gpus_to_the_key() -> None:
    key = SigningKey.generate()
    batch = readings("h100")
    binder = FakeBinder(batch)
    b = builder(key, hardware=binder)
    first, second = verify(key, b.build(batch, [])), verify(key, b.build(batch, []))
    expected = binding_nonce(key.key_id, 1, b"")
    assert binder.asked == [expected]  # asked once per start
    assert [(x.gpu, x.status, x.nonce) for x in first.attestation.bindings] == [
        (0, pb.BINDING_STATUS_REPORT, expected),
        (1, pb.BINDING_STATUS_REPORT, expected),
    ]
    assert not second.attestation.bindings


def test_a_report_over_another_nonce_is_refused() -> None:
    key = SigningKey.generate()
    batch = readings("h100")
    stale = binding_nonce(key.key_id, 7, bytes(32))  # a report from an earlier start
    env = builder(key, hardware=FakeBinder(batch)).build(batch, [])
    att = pb.Attestation.FromString(env.payload)
    att.bindings[0].nonce = stale
    forged = Envelope.sign(att.SerializeToString(deterministic=True), key)
    with pytest.raises(VerificationError) as e:
        verify(key, forged)
    assert e.value.reason == "bad_binding"


def test_without_a_binder_every_gpu_says_not_supported() -> None:
    key = SigningKey.generate()
    batch = readings("h100-mig")
    rec = verify(key, builder(key).build(batch, []))
    bindings = rec.attestation.bindings
    assert [x.status for x in bindings] == [pb.BINDING_STATUS_NOT_SUPPORTED] * 2
    assert all(x.nonce == b"" and x.report == b"" for x in bindings)
    assert {rec.attestation.gpus[x.gpu].uuid for x in bindings} == {r.gpu.uuid for r in batch}


def test_the_simulator_binds_its_physical_gpus_as_unsupported() -> None:
    key = SigningKey.generate()
    sim = SimBackend(2, start_ns=START, profile=PROFILES["h100-mig"])
    batch = sim.next_readings()
    assert batch is not None
    rec = verify(key, builder(key, hardware=sim).build(batch, []))
    bound = [rec.attestation.gpus[x.gpu] for x in rec.attestation.bindings]
    assert [(g.uuid, g.mig_instance, g.sm_count) for g in bound] == [
        ("GPU-sim-0-0", "", 132),
        ("GPU-sim-0-1", "", 132),
    ]
    assert len(rec.attestation.gpus) == 8  # six instances and the two GPUs they belong to


def test_report_data_without_a_report_status_is_malformed() -> None:
    key = SigningKey.generate()
    env = builder(key).build(readings("h100"), [])
    att = pb.Attestation.FromString(env.payload)
    att.bindings[0].report = b"smuggled"
    with pytest.raises(VerificationError, match="report data"):
        verify(key, Envelope.sign(att.SerializeToString(deterministic=True), key))


def test_rounds_signed_together_keep_each_rounds_attribution() -> None:
    """Several sampling rounds in one record: every interval is the same as when signed alone,
    and each round is attributed with the windows taken after it. Job A's source stops naming
    it after the first round and job B starts with the second: A gets the first round only, B
    the second only (merging the windows would split the second round between A and B; taking
    the last round's would leave the first unattributed)."""
    sim = SimBackend(2, seed=4, start_ns=START)
    first, second = sim.next_readings(), sim.next_readings()
    assert first is not None and second is not None
    job_a, job_b = "slurm:test/7", "slurm:test/8"
    round_one = [JobWindow(job_a, None, START - SEC, None, gpu=ALL_GPUS)]
    round_two = [JobWindow(job_b, None, second[0].start_ns, None, gpu=ALL_GPUS)]

    key = SigningKey.generate()
    together = verify(key, builder(key).build_rounds([(first, round_one), (second, round_two)]))
    alone_key = SigningKey.generate()
    alone = builder(alone_key)
    singles = [
        verify(alone_key, alone.build(first, round_one)),
        verify(alone_key, alone.build(second, round_two)),
    ]

    assert len(together.attestation.intervals) == 4
    assert [i.SerializeToString() for i in together.attestation.intervals] == [
        i.SerializeToString() for rec in singles for i in rec.attestation.intervals
    ]
    jobs_first = {c.job_id for c in together.contributions if c.start_ns == first[0].start_ns}
    jobs_second = {c.job_id for c in together.contributions if c.start_ns == second[0].start_ns}
    assert (jobs_first, jobs_second) == ({job_a}, {job_b})
