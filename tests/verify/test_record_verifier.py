"""RecordVerifier: each test carries one attack or malformation and expects its reason."""

import dataclasses
from collections.abc import Callable

import pytest

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.model import Pipe, Precision
from flopwatch.runs import CLASS_BIT, WorkloadClass
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from flopwatch.verify.sums import DAY_NS, utc_day

S = 10**9
T0 = 1_800_000_000 * S
H100 = GpuInfo(uuid="GPU-1", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980)
WINDOWS = [JobWindow("job-1", pid=42, start_ns=0, end_ns=None, precision=Precision.BF16)]


def reading(start: int = T0, busy: float = 0.9, clock: float = 1500.0) -> GpuReading:
    return GpuReading(
        gpu=H100,
        start_ns=start,
        end_ns=start + S,
        pipe_busy={Pipe.HMMA: busy, Pipe.FP32: 0.1},
        sm_clock_mhz_s=clock,
        clock_samples=10,
        energy_mj=500_000,
        processes=(ProcessShare(42, 1.0),),
    )


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def build(key: SigningKey, *readings: GpuReading) -> Envelope:
    b = RecordBuilder(node_id="n1", cluster="c", signer=key, head=ChainHead(), now_ns=lambda: T0)
    return b.build(list(readings) or [reading()], WINDOWS)


def verifier(key: SigningKey, now: int | None = None) -> RecordVerifier:
    return RecordVerifier(
        trusted_keys={key.key_id: key.public_key},
        now_ns=(lambda: now) if now is not None else None,
    )


def resigned(key: SigningKey, env: Envelope, edit: Callable[[pb.Attestation], None]) -> Envelope:
    """The node itself lies: edit the payload and sign it again with the node's own key."""
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    edit(att)
    return Envelope.sign(att.SerializeToString(), key)


def reason(key: SigningKey, env: Envelope, now: int | None = None) -> str:
    with pytest.raises(VerificationError) as e:
        verifier(key, now).verify(env)
    return e.value.reason


def test_honest_record_verifies_with_job_figures(key: SigningKey) -> None:
    rec = verifier(key).verify(build(key))
    assert rec.sequence == 1
    [c] = rec.contributions
    assert c.job_id == "job-1"
    elapsed = 132 * 1500 * 10**6
    assert c.flops_estimate == round(0.9 * elapsed) * 4096 + round(0.1 * elapsed) * 256


def test_inflated_claimed_flops(key: SigningKey) -> None:
    def inflate(a: pb.Attestation) -> None:
        a.intervals[0].jobs[0].flops_estimate *= 2

    assert reason(key, resigned(key, build(key), inflate)) == "flops_mismatch"


def test_deflated_upper_bound(key: SigningKey) -> None:
    def deflate(a: pb.Attestation) -> None:
        a.intervals[0].flops_upper //= 2

    assert reason(key, resigned(key, build(key), deflate)) == "flops_mismatch"


def test_busier_than_elapsed(key: SigningKey) -> None:
    def busy(a: pb.Attestation) -> None:
        a.intervals[0].active_sm_cycles.hmma = a.intervals[0].elapsed_sm_cycles + 1

    assert reason(key, resigned(key, build(key), busy)) == "implausible"


def test_clock_faster_than_maximum(key: SigningKey) -> None:
    def overclock(a: pb.Attestation) -> None:
        a.intervals[0].elapsed_sm_cycles *= 3

    assert reason(key, resigned(key, build(key), overclock)) == "implausible"


def test_interval_in_the_future(key: SigningKey) -> None:
    assert reason(key, build(key), now=T0 - 3600 * S) == "future"


def test_backwards_interval(key: SigningKey) -> None:
    def backwards(a: pb.Attestation) -> None:
        a.intervals[0].end_unix_ns = a.intervals[0].start_unix_ns - 1

    assert reason(key, resigned(key, build(key), backwards)) == "bad_interval"


def test_overlapping_intervals_of_one_gpu(key: SigningKey) -> None:
    env = build(key, reading(T0), reading(T0 + S // 2))
    assert reason(key, env) == "overlap"


def test_shares_not_summing_to_one(key: SigningKey) -> None:
    def half(a: pb.Attestation) -> None:
        a.intervals[0].jobs[0].share_ppm = 500_000

    assert reason(key, resigned(key, build(key), half)) == "bad_shares"


def test_payload_names_another_key(key: SigningKey) -> None:
    def other(a: pb.Attestation) -> None:
        a.key_id = "0" * 64

    assert reason(key, resigned(key, build(key), other)) == "key_mismatch"


def test_unknown_model_version(key: SigningKey) -> None:
    def future_model(a: pb.Attestation) -> None:
        a.flop_model_version = "99"

    assert reason(key, resigned(key, build(key), future_model)) == "unknown_model"


def test_first_record_naming_a_predecessor(key: SigningKey) -> None:
    def prev(a: pb.Attestation) -> None:
        a.previous_digest = b"x" * 32

    assert reason(key, resigned(key, build(key), prev)) == "bad_chain"


def test_gpm_method_claimed_for_unknown_gpu(key: SigningKey) -> None:
    def unknown(a: pb.Attestation) -> None:
        a.gpus[0].cc_major = 42

    assert reason(key, resigned(key, build(key), unknown)) == "bad_method"


def test_interval_naming_missing_gpu(key: SigningKey) -> None:
    def dangling(a: pb.Attestation) -> None:
        a.intervals[0].gpu = 5

    assert reason(key, resigned(key, build(key), dangling)) == "malformed"


def test_sampling_error_becomes_signed_gap(key: SigningKey) -> None:
    failed = GpuReading(
        gpu=H100,
        start_ns=T0,
        end_ns=T0 + S,
        pipe_busy=None,
        sm_clock_mhz_s=0,
        clock_samples=0,
        error="NVML_ERROR_GPU_IS_LOST",
    )
    rec = verifier(key).verify(build(key, failed))
    assert rec.contributions == ()
    [gap] = rec.gaps
    assert (gap.gpu_uuid, gap.reason, gap.start_ns) == ("GPU-1", "sampling_error", T0)


def test_sums_add_up_the_records_figures(key: SigningKey) -> None:
    """Two GPUs, two rounds, two jobs sharing GPU-1, one of them in a declared run of an
    account: the sums the verifier builds while it checks equal the record's per-interval
    figures added up by hand, GPU time (ns x ppm) and energy (mJ x ppm) by each job's share."""
    gpu2 = GpuInfo(uuid="GPU-2", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980)
    shared = (ProcessShare(42, 0.7), ProcessShare(43, 0.3))
    job2 = JobWindow(
        "job-2",
        pid=43,
        start_ns=0,
        end_ns=None,
        run="run-x",
        account="acme",
        workload_class=WorkloadClass.FINE_TUNING,
        run_source="manual",
    )
    windows = [*WINDOWS, job2]

    def round_at(start: int) -> list[GpuReading]:
        first = dataclasses.replace(reading(start), processes=shared)
        second = dataclasses.replace(reading(start, busy=0.4), gpu=gpu2)
        return [first, second]

    b = RecordBuilder(node_id="n1", cluster="c", signer=key, head=ChainHead(), now_ns=lambda: T0)
    env = b.build_rounds([(round_at(T0), windows), (round_at(T0 + S), windows)])
    rec = verifier(key).verify(env)

    def added(rows: list[tuple[object, tuple[int, ...]]]) -> dict[object, tuple[int, ...]]:
        out: dict[object, tuple[int, ...]] = {}
        for k, (est, up, start, end, fs, nj) in rows:
            e, u, s, t, n, f, j = out.get(k, (0, 0, start, end, 0, 0, 0))
            out[k] = (e + est, u + up, min(s, start), max(t, end), n + 1, f + fs, j + nj)
        return out

    att = rec.attestation
    shares = []  # (job, gpu uuid, run, account, figures) from the record itself
    for iv in att.intervals:
        for j in iv.jobs:
            span = iv.end_unix_ns - iv.start_unix_ns
            figures = (j.flops_estimate, j.flops_upper, iv.start_unix_ns, iv.end_unix_ns)
            by_share = (span * j.share_ppm, iv.energy_mj * j.share_ppm)
            shares.append((j.job_id, att.gpus[iv.gpu].uuid, j.run, j.account, figures + by_share))
    assert {s[0] for s in shares} == {"job-1", "job-2"} and len(shares) == 6
    assert rec.sums.jobs == added([(s[0], s[4]) for s in shares])
    assert rec.sums.job_gpus == added([((s[0], s[1]), s[4]) for s in shares])
    assert rec.sums.runs == added([((s[3], s[2] or s[0]), s[4]) for s in shares])
    assert set(rec.sums.runs) == {("", "job-1"), ("acme", "run-x")}
    assert rec.sums.run_classes == {
        ("", "job-1"): CLASS_BIT[WorkloadClass.UNKNOWN],
        ("acme", "run-x"): CLASS_BIT[WorkloadClass.FINE_TUNING],
    }
    day = T0 // DAY_NS
    assert rec.sums.account_days == added([((s[3], day), s[4]) for s in shares])
    assert rec.sums.devices == added(
        [
            (
                att.gpus[iv.gpu].uuid,
                (
                    iv.flops_estimate,
                    iv.flops_upper,
                    iv.start_unix_ns,
                    iv.end_unix_ns,
                    (iv.end_unix_ns - iv.start_unix_ns) * 10**6,
                    iv.energy_mj * 10**6,
                ),
            )
            for iv in att.intervals
        ]
    )
    # The jobs' GPU time and energy add up to the whole GPUs': nothing lost to the shares.
    for i in (5, 6):
        assert sum(s[i] for s in rec.sums.jobs.values()) == sum(
            d[i] for d in rec.sums.devices.values()
        )
    assert rec.sums.spans == {
        "GPU-1": ((T0, T0 + S), (T0 + S, T0 + 2 * S)),
        "GPU-2": ((T0, T0 + S), (T0 + S, T0 + 2 * S)),
    }


def test_an_interval_counts_for_the_utc_day_it_ends_in(key: SigningKey) -> None:
    """Crossing midnight: the day it ends in; ending at midnight: the day it ran in."""
    midnight = (T0 // DAY_NS + 1) * DAY_NS
    assert utc_day(midnight) == midnight // DAY_NS - 1
    assert utc_day(midnight + 1) == midnight // DAY_NS
    for start, day in (
        (midnight - S, midnight // DAY_NS - 1),
        (midnight - S // 2, midnight // DAY_NS),
    ):
        rec = verifier(key).verify(build(key, reading(start)))
        assert list(rec.sums.account_days) == [("", day)]
