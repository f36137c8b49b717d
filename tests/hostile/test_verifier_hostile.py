"""Hostile attestations against RecordVerifier: each test carries one attack and its reason.

Most attacks come from a lying node: the record is structurally valid and signed by the trusted
key, so the signature passes and the content checks must stop it. `lying` puts in each interval
the figures the FLOP model derives from the hostile counters, so only the counters are wrong.
The forged-signature attacks at the end come from someone without the node's key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.dsse import PAYLOAD_TYPE, Envelope, pae
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import Pipe
from flopwatch.model.flops import PPM
from flopwatch.v1 import attestation_pb2 as pb
from tests.hostile.hostile_helpers import (
    HOSTILE,
    I32,
    INT64_MAX,
    INT64_MIN,
    NODE_KEY,
    NOW,
    STRANGER_KEY,
    UINT32_MAX,
    UINT64_MAX,
    S,
    attestation,
    counters,
    edited,
    field_bytes,
    field_fixed64,
    field_varint,
    h100,
    interval,
    refigure,
    rejection,
    signed,
    tag,
    verifier,
)

HONEST = counters(h100())
ELAPSED = HONEST.elapsed_sm_cycles  # 132 SMs x 1800 MHz x 1 s
MAX_ELAPSED = HONEST.max_elapsed_sm_cycles  # 132 SMs x 1980 MHz x 1 s
CEILING = int(MAX_ELAPSED * (1 + DEFAULT_LIMITS.clock_tolerance))
SKEW = DEFAULT_LIMITS.max_clock_skew_ns
PIPES = st.sampled_from(list(Pipe))
Edit = Callable[[pb.Attestation], None]


def lying(edit: Edit) -> Envelope:
    """An honest record, edited, with figures recomputed from its counters, signed by the node."""
    att = attestation()
    edit(att)
    refigure(att)
    return signed(att)


def test_baseline_records_verify() -> None:
    # The attacks below start from these; without this the tests could pass for another reason.
    verifier().verify(signed(attestation()))
    verifier().verify(lying(lambda a: None))


# -- impossible counters -----------------------------------------------------------------------
@settings(HOSTILE)
@given(PIPES, st.integers(1, UINT64_MAX - ELAPSED))
def test_pipe_busy_more_cycles_than_elapsed(pipe: Pipe, excess: int) -> None:
    def busier(a: pb.Attestation) -> None:
        setattr(a.intervals[0].active_sm_cycles, pipe.value, ELAPSED + excess)

    assert rejection(lying(busier)) == "implausible"


@pytest.mark.parametrize("field", [p.value for p in Pipe] + ["elapsed_sm_cycles"])
def test_counter_at_uint64_max(field: str) -> None:
    def saturate(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        target = iv if field == "elapsed_sm_cycles" else iv.active_sm_cycles
        setattr(target, field, UINT64_MAX)

    assert rejection(lying(saturate)) == "implausible"


@settings(HOSTILE)
@given(st.integers(1, UINT64_MAX - CEILING))
def test_clock_integral_above_the_maximum_clock(over: int) -> None:
    def overclock(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        iv.elapsed_sm_cycles = CEILING + over
        iv.active_sm_cycles.hmma = iv.elapsed_sm_cycles // 2

    assert rejection(lying(overclock)) == "implausible"


@settings(HOSTILE)
@given(st.integers(10_001, UINT32_MAX))
def test_maximum_clock_no_gpu_has(mhz: int) -> None:
    assert rejection(lying(lambda a: setattr(a.gpus[0], "max_sm_clock_mhz", mhz))) == "implausible"


@settings(HOSTILE)
@given(st.just(0) | st.integers(1025, UINT32_MAX))
def test_sm_count_no_gpu_has(sms: int) -> None:
    assert rejection(lying(lambda a: setattr(a.gpus[0], "sm_count", sms))) == "implausible"


@settings(HOSTILE)
@given(st.integers(1, MAX_ELAPSED // 20))
def test_every_pipe_busy_above_the_maximum_clock_exceeds_the_physical_peak(extra: int) -> None:
    # Within the clock tolerance, so only the peak check can stop it.
    def flat_out(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        iv.elapsed_sm_cycles = MAX_ELAPSED + extra
        for p in Pipe:
            setattr(iv.active_sm_cycles, p.value, iv.elapsed_sm_cycles)

    assert rejection(lying(flat_out)) == "implausible"


@settings(HOSTILE)
@given(st.integers(1, MAX_ELAPSED // 20))
def test_full_utilization_above_the_maximum_clock_exceeds_the_physical_peak(extra: int) -> None:
    def flat_out(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        iv.method = pb.METHOD_NVML_UTILIZATION
        iv.utilization_centipercent = 10_000
        iv.elapsed_sm_cycles = MAX_ELAPSED + extra
        iv.ClearField("active_sm_cycles")

    assert rejection(lying(flat_out)) == "implausible"


@settings(HOSTILE)
@given(st.integers(10_001, UINT32_MAX))
def test_utilization_above_100_percent(centipercent: int) -> None:
    def over(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        iv.method = pb.METHOD_NVML_UTILIZATION
        iv.utilization_centipercent = centipercent
        iv.ClearField("active_sm_cycles")

    assert rejection(lying(over)) == "implausible"


# -- figures that do not follow from the counters ----------------------------------------------
FIGURES = ["job_estimate", "job_upper", "interval_estimate", "interval_upper"]


@settings(HOSTILE, max_examples=80)
@given(st.sampled_from(FIGURES), st.integers(0, UINT64_MAX))
def test_claimed_flops_differ_from_the_counters(figure: str, claimed: int) -> None:
    def claim(a: pb.Attestation) -> None:
        iv = a.intervals[0]
        target, field = {
            "job_estimate": (iv.jobs[0], "flops_estimate"),
            "job_upper": (iv.jobs[0], "flops_upper"),
            "interval_estimate": (iv, "flops_estimate"),
            "interval_upper": (iv, "flops_upper"),
        }[figure]
        if getattr(target, field) == claimed:
            claimed_other = claimed + 1 if claimed < UINT64_MAX else claimed - 1
            setattr(target, field, claimed_other)
        else:
            setattr(target, field, claimed)

    assert rejection(edited(claim)) == "flops_mismatch"


# -- job shares --------------------------------------------------------------------------------
@settings(HOSTILE, max_examples=60)
@given(
    st.lists(st.integers(0, PPM) | st.integers(0, UINT32_MAX), min_size=1, max_size=64).filter(
        lambda shares: sum(shares) != PPM
    )
)
def test_shares_that_do_not_sum_to_one(shares: list[int]) -> None:
    def share(a: pb.Attestation) -> None:
        template = a.intervals[0].jobs[0]
        del a.intervals[0].jobs[:]
        for i, ppm in enumerate(shares):
            job = a.intervals[0].jobs.add()
            job.CopyFrom(template)
            job.job_id, job.share_ppm = f"slurm:c/{i}", ppm

    assert rejection(lying(share)) == "bad_shares"


@pytest.mark.parametrize("jobs", [0, DEFAULT_LIMITS.max_jobs_per_interval + 1, 1000])
def test_no_jobs_or_more_jobs_than_the_limit(jobs: int) -> None:
    def count(a: pb.Attestation) -> None:
        template = a.intervals[0].jobs[0]
        del a.intervals[0].jobs[:]
        for i in range(jobs):
            job = a.intervals[0].jobs.add()
            job.CopyFrom(template)
            job.job_id, job.share_ppm = f"slurm:c/{i}", PPM // jobs + (i < PPM % jobs)

    assert rejection(lying(count)) == "malformed"


# -- time: clock skew and intervals that are not intervals --------------------------------------
def at(start: int, end: int) -> Edit:
    def move(a: pb.Attestation) -> None:
        a.intervals[0].start_unix_ns, a.intervals[0].end_unix_ns = start, end

    return move


@settings(HOSTILE)
@given(st.integers(1, INT64_MAX - NOW - SKEW))
def test_interval_ending_beyond_the_allowed_clock_skew(beyond: int) -> None:
    end = NOW + SKEW + beyond
    assert rejection(lying(at(end - S, end))) == "future"


@settings(HOSTILE, max_examples=20)
@given(st.integers(0, SKEW))
def test_interval_ending_within_the_allowed_clock_skew_is_accepted(ahead: int) -> None:
    end = NOW + ahead
    verifier().verify(lying(at(end - S, end)))


@settings(HOSTILE)
@given(st.integers(1, INT64_MAX - NOW - SKEW))
def test_gap_ending_beyond_the_allowed_clock_skew(beyond: int) -> None:
    def gap(a: pb.Attestation) -> None:
        end = NOW + SKEW + beyond
        a.gaps.add(gpu=0, start_unix_ns=end - S, end_unix_ns=end, reason=1)

    assert rejection(lying(gap)) == "future"


@settings(HOSTILE)
@given(st.integers(1, INT64_MAX), st.integers(0, 2**64))
def test_zero_or_negative_length_interval(start: int, back: int) -> None:
    assert rejection(lying(at(start, max(INT64_MIN, start - back)))) == "bad_interval"


@settings(HOSTILE)
@given(st.integers(INT64_MIN, 0), st.integers(1, S))
def test_interval_starting_at_or_before_1970(start: int, length: int) -> None:
    assert rejection(lying(at(start, start + length))) == "bad_interval"


@settings(HOSTILE)
@given(st.integers(DEFAULT_LIMITS.max_interval_ns + 1, INT64_MAX - 1))
def test_interval_longer_than_the_limit(length: int) -> None:
    start = INT64_MAX - length
    assert rejection(lying(at(start, start + length))) == "bad_interval"


@settings(HOSTILE)
@given(st.integers(0, S - 1))
def test_two_intervals_of_one_gpu_overlap(offset: int) -> None:
    def twice(a: pb.Attestation) -> None:
        a.intervals.append(interval(HONEST, start=a.intervals[0].start_unix_ns + offset))

    assert rejection(lying(twice)) == "overlap"


@settings(HOSTILE)
@given(st.integers(1, UINT32_MAX))
def test_interval_or_gap_naming_a_gpu_not_in_the_record(index: int) -> None:
    def dangling_interval(a: pb.Attestation) -> None:
        a.intervals[0].gpu = index

    def dangling_gap(a: pb.Attestation) -> None:
        a.gaps.add(gpu=index, start_unix_ns=NOW - S, end_unix_ns=NOW, reason=1)

    assert rejection(edited(dangling_interval)) == "malformed"
    assert rejection(lying(dangling_gap)) == "malformed"


# -- counts and sizes ------------------------------------------------------------------------
@settings(HOSTILE, max_examples=10)
@given(st.integers(DEFAULT_LIMITS.max_gpus_per_attestation + 1, 200))
def test_more_gpus_than_the_limit(n: int) -> None:
    def many(a: pb.Attestation) -> None:
        a.gpus.extend(h100(f"GPU-extra-{i}") for i in range(n - 1))

    assert rejection(lying(many)) == "too_many"


@pytest.mark.parametrize("what", ["intervals", "gaps"])
def test_more_intervals_or_gaps_than_the_limit(what: str) -> None:
    def many(a: pb.Attestation) -> None:
        if what == "intervals":
            n = DEFAULT_LIMITS.max_intervals_per_attestation + 1
            a.intervals.extend([a.intervals[0]] * (n - 1))
        else:
            n = DEFAULT_LIMITS.max_gaps_per_attestation + 1
            a.gaps.extend([pb.Gap(gpu=0, start_unix_ns=NOW - S, end_unix_ns=NOW)] * n)

    assert rejection(edited(many)) == "too_many"


TEXT_FIELDS = {
    "node_id": lambda a: a,
    "cluster": lambda a: a,
    "agent_version": lambda a: a,
    "uuid": lambda a: a.gpus[0],
    "serial": lambda a: a.gpus[0],
    "name": lambda a: a.gpus[0],
    "mig_instance": lambda a: a.gpus[0],
    "job_id": lambda a: a.intervals[0].jobs[0],
    "source": lambda a: a.intervals[0].jobs[0],
    "detail": lambda a: a.gaps.add(gpu=0, start_unix_ns=NOW - S, end_unix_ns=NOW),
}


@settings(HOSTILE, max_examples=60)
@given(
    st.sampled_from(sorted(TEXT_FIELDS)),
    st.integers(DEFAULT_LIMITS.max_string_chars + 1, 50_000),
    st.characters(codec="utf-8", exclude_categories=["Cs"]),
)
def test_text_fields_longer_than_the_limit(field: str, length: int, char: str) -> None:
    def lengthen(a: pb.Attestation) -> None:
        setattr(TEXT_FIELDS[field](a), field, char * length)

    assert rejection(lying(lengthen)) == "malformed"


@pytest.mark.parametrize("field", ["node_id", "uuid", "job_id"])
def test_required_text_fields_that_are_empty(field: str) -> None:
    assert rejection(lying(lambda a: setattr(TEXT_FIELDS[field](a), field, ""))) == "malformed"


def test_envelope_above_the_size_limit() -> None:
    def pad(a: pb.Attestation) -> None:
        a.gaps.add(gpu=0, start_unix_ns=NOW - S, end_unix_ns=NOW, detail="x" * (1 << 20))

    env = edited(pad)
    assert rejection(env.to_bytes()) == "oversized"
    with pytest.raises(Exception) as e:
        Envelope.from_message(env.to_message())
    assert getattr(e.value, "reason", None) == "oversized"


# -- identity, model version, sequence, chain ---------------------------------------------------
@settings(HOSTILE, max_examples=60)
@given(st.text(max_size=20_000).filter(lambda v: v != "1"))
def test_unknown_flop_model_version(version: str) -> None:
    assert rejection(lying(lambda a: setattr(a, "flop_model_version", version))) == "unknown_model"


@settings(HOSTILE)
@given(st.text(max_size=20_000).filter(lambda k: k != NODE_KEY.key_id))
def test_payload_names_another_key(key_id: str) -> None:
    assert rejection(lying(lambda a: setattr(a, "key_id", key_id))) == "key_mismatch"


def test_payload_names_a_key_that_did_not_sign_it() -> None:
    # Signed by the trusted node, but names the stranger (whose record it pretends to be).
    v = verifier(NODE_KEY)
    v2 = verifier(STRANGER_KEY)
    env = lying(lambda a: setattr(a, "key_id", STRANGER_KEY.key_id))
    assert rejection(env, v) == "key_mismatch"
    assert rejection(env, v2) == "unknown_key"


def test_sequence_zero() -> None:
    assert rejection(lying(lambda a: setattr(a, "sequence", 0))) == "bad_sequence"


@settings(HOSTILE)
@given(st.binary(min_size=1, max_size=100))
def test_first_record_naming_a_predecessor(previous: bytes) -> None:
    assert rejection(lying(lambda a: setattr(a, "previous_digest", previous))) == "bad_chain"


@settings(HOSTILE)
@given(st.integers(2, UINT64_MAX), st.binary(max_size=100).filter(lambda d: len(d) != 32))
def test_later_record_without_a_sha256_predecessor(sequence: int, previous: bytes) -> None:
    def chain(a: pb.Attestation) -> None:
        a.sequence, a.previous_digest = sequence, previous

    assert rejection(lying(chain)) == "bad_chain"


# -- enums and methods -----------------------------------------------------------------------
OPEN_ENUM = st.integers(-(2**31), 2**31 - 1)


@settings(HOSTILE)
@given(OPEN_ENUM.filter(lambda m: m not in (1, 2, 3)))
def test_unknown_method(method: int) -> None:
    assert rejection(edited(lambda a: setattr(a.intervals[0], "method", method))) == "malformed"


@settings(HOSTILE)
@given(OPEN_ENUM.filter(lambda p: not 0 <= p <= 6))
def test_unknown_precision(precision: int) -> None:
    def declare(a: pb.Attestation) -> None:
        a.intervals[0].jobs[0].declared_precision = precision

    assert rejection(edited(declare)) == "malformed"


def test_method_that_does_not_fit_the_gpu() -> None:
    def unknown_rate(a: pb.Attestation) -> None:
        a.intervals[0].method = pb.METHOD_UNKNOWN_RATE

    def unknown_gpu(a: pb.Attestation) -> None:
        a.gpus[0].cc_major = 42  # GPM claimed for a GPU the rate table does not know

    def utilization_with_gpm(a: pb.Attestation) -> None:
        a.intervals[0].utilization_centipercent = 5000

    for edit in (unknown_rate, unknown_gpu, utilization_with_gpm):
        assert rejection(lying(edit)) == "bad_method"


# -- what the generated classes cannot say: wrong wire types, NaN, negative, on the wire -----------
def with_raw_interval_fields(*raw: bytes, clear: tuple[str, ...] = ()) -> bytes:
    """A signed-ready payload whose interval carries `raw` field bytes after its own fields
    (cleared first, so the raw copy is the only one the parser sees)."""
    att = attestation()
    iv = att.intervals[0]
    for name in clear:
        iv.ClearField(name)
    iv_bytes = iv.SerializeToString() + b"".join(raw)
    att.ClearField("intervals")
    return att.SerializeToString() + field_bytes(10, iv_bytes)


FLOAT_BITS = {
    "nan": struct.pack("<d", float("nan")),
    "inf": struct.pack("<d", float("inf")),
    "-inf": struct.pack("<d", float("-inf")),
    "-1.0": struct.pack("<d", -1.0),
}


@pytest.mark.parametrize("value", sorted(FLOAT_BITS))
def test_float_in_the_elapsed_counter_is_not_a_counter(value: str) -> None:
    # No field of an attestation is a float. A double sent where the uint64 elapsed counter
    # belongs has the wrong wire type: the parser keeps it as an unknown field and the counter
    # reads 0, so the busy HMMA cycles exceed it.
    payload = with_raw_interval_fields(
        field_fixed64(5, FLOAT_BITS[value]), clear=("elapsed_sm_cycles",)
    )
    assert rejection(signed(payload)) == "implausible"


@pytest.mark.parametrize("value", sorted(FLOAT_BITS))
def test_float_in_the_share_is_not_a_share(value: str) -> None:
    job = attestation().intervals[0].jobs[0]
    job.ClearField("share_ppm")
    raw_job = job.SerializeToString() + tag(2, I32) + struct.pack("<f", float(value))
    payload = with_raw_interval_fields(field_bytes(7, raw_job), clear=("jobs",))
    assert rejection(signed(payload)) == "bad_shares"


def test_negative_one_in_a_uint64_counter_reads_as_uint64_max() -> None:
    # int64 -1 encoded as a 10-byte varint: uint64 fields read it as 2**64 - 1.
    negative_one = field_varint(5, -1 % 2**64)
    assert len(negative_one) == 11
    payload = with_raw_interval_fields(negative_one, clear=("elapsed_sm_cycles",))
    assert rejection(signed(payload)) == "implausible"


def test_wrong_wire_types_for_sequence_and_node_id() -> None:
    att = attestation()
    att.ClearField("sequence")
    as_bytes = att.SerializeToString() + field_bytes(5, b"\x01")
    assert rejection(signed(as_bytes)) == "bad_sequence"
    att = attestation()
    att.ClearField("node_id")
    as_varint = att.SerializeToString() + field_varint(1, 7)
    assert rejection(signed(as_varint)) == "malformed"


# -- forged signatures -----------------------------------------------------------------------
HONEST_ENV = signed(attestation())


def resigned(sig: bytes, keyid: str = NODE_KEY.key_id, env: Envelope = HONEST_ENV) -> Envelope:
    return Envelope(payload=env.payload, payload_type=env.payload_type, signatures=((keyid, sig),))


def test_signed_by_another_key_under_the_node_key_id() -> None:
    sig = STRANGER_KEY.sign(pae(PAYLOAD_TYPE, HONEST_ENV.payload))
    assert rejection(resigned(sig)) == "bad_signature"


def test_signed_by_an_unknown_key_under_its_own_key_id() -> None:
    assert rejection(signed(attestation(key=STRANGER_KEY), STRANGER_KEY)) == "unknown_key"


@settings(HOSTILE, max_examples=100)
@given(st.binary(max_size=200))
def test_random_signature_bytes(sig: bytes) -> None:
    assert rejection(resigned(sig)) == "bad_signature"


OTHER_PAYLOAD = signed(attestation(sequence=2, previous_digest=b"\x00" * 32)).payload
OTHER_MESSAGES = {
    "raw payload, no PAE": HONEST_ENV.payload,
    "PAE of another payload type": pae("application/vnd.in-toto+json", HONEST_ENV.payload),
    "PAE of another payload": pae(PAYLOAD_TYPE, OTHER_PAYLOAD),
    "PAE with a wrong length": b"DSSEv1 %d %s %d %s"
    % (len(PAYLOAD_TYPE) + 1, PAYLOAD_TYPE.encode(), len(HONEST_ENV.payload), HONEST_ENV.payload),
    "PAE with a trailing byte": pae(PAYLOAD_TYPE, HONEST_ENV.payload) + b"\n",
    "PAE of an empty payload": pae(PAYLOAD_TYPE, b""),
}


@pytest.mark.parametrize("message", sorted(OTHER_MESSAGES))
def test_trusted_signature_over_other_bytes(message: str) -> None:
    sig = NODE_KEY.sign(OTHER_MESSAGES[message])
    assert rejection(resigned(sig)) == "bad_signature"


def test_signature_transplanted_from_another_record() -> None:
    other = signed(attestation(sequence=2, previous_digest=b"\x00" * 32))
    assert rejection(resigned(other.signatures[0][1])) == "bad_signature"


def test_non_canonical_ed25519_signature() -> None:
    # The same signature with S + L (the group order) in place of S: verifies in lax Ed25519
    # implementations, so a record would have two signatures. Must be refused.
    group_order = 2**252 + 27742317777372353535851937790883648493
    sig = HONEST_ENV.signatures[0][1]
    s = int.from_bytes(sig[32:], "little") + group_order
    assert s < 2**256
    assert rejection(resigned(sig[:32] + s.to_bytes(32, "little"))) == "bad_signature"


@settings(HOSTILE)
@given(st.text(max_size=300).filter(lambda t: t != PAYLOAD_TYPE))
def test_payload_type_other_than_flopwatch(payload_type: str) -> None:
    env = Envelope.sign(HONEST_ENV.payload, NODE_KEY, payload_type=payload_type)
    assert rejection(env) == "wrong_payload_type"


def test_no_signature() -> None:
    env = HONEST_ENV.to_message()
    del env.signatures[:]
    assert rejection(env.SerializeToString()) == "unsigned"


@pytest.mark.parametrize("field", ["flop_model_version", "key_id"])
def test_rejection_does_not_echo_long_hostile_text(field: str) -> None:
    # The explanation goes into acks and log lines; `rejection` bounds its length.
    reason = rejection(lying(lambda a: setattr(a, field, "\n" * 100 + "x" * 100_000)))
    assert reason in ("unknown_model", "key_mismatch")


def test_rejection_does_not_echo_control_characters_from_key_ids() -> None:
    # Key ids in signatures are unverified text; a newline in one must not split a log line.
    env = resigned(HONEST_ENV.signatures[0][1], keyid="\nFORGED LOG LINE")
    assert rejection(env) == "unknown_key"


@settings(HOSTILE, max_examples=20)
@given(st.integers(-S // 2, S // 2))
def test_one_gpu_listed_twice_to_count_its_seconds_twice(offset: int) -> None:
    # Two entries for one device; one interval on each. Per entry nothing overlaps.
    def twice(a: pb.Attestation) -> None:
        a.gpus.append(a.gpus[0])
        a.intervals.append(interval(HONEST, gpu=1, start=a.intervals[0].start_unix_ns + offset))

    assert rejection(lying(twice)) == "malformed"


def test_mig_instances_of_one_gpu_are_distinct_devices() -> None:
    def two_instances(a: pb.Attestation) -> None:
        a.gpus[0].mig_instance = "MIG-a"
        a.gpus.append(a.gpus[0])
        a.gpus[1].mig_instance = "MIG-b"
        a.intervals.append(interval(HONEST, gpu=1, start=a.intervals[0].start_unix_ns))

    verifier().verify(lying(two_instances))


IDENTIFIER_FIELDS = sorted(set(TEXT_FIELDS) - {"name", "detail"})
UNPRINTABLE = ["\x00", "\x1b[2J", "\n", "\r", "\x7f", "\x9b", "\u200d", "\u202e", "\u2028", "\xa0"]


@settings(HOSTILE, max_examples=60)
@given(st.sampled_from(IDENTIFIER_FIELDS), st.sampled_from(UNPRINTABLE), st.integers(0, 20))
def test_identifiers_holding_an_unprintable_character(field: str, bad: str, at: int) -> None:
    """NUL once cut SQLite's json_each look-ups, ESC and newlines reached terminals and logs:
    every identifier a record names must be printable, in every field."""

    def poison(a: pb.Attestation) -> None:
        holder = TEXT_FIELDS[field](a)
        value = getattr(holder, field) or "x"
        setattr(holder, field, value[:at] + bad + value[at:])

    assert rejection(lying(poison)) == "malformed"


@pytest.mark.parametrize("field", ["name", "detail"])
def test_free_text_may_break_lines_but_not_hold_escape_sequences(field: str) -> None:
    def text(value: str) -> Callable[[pb.Attestation], None]:
        return lambda a: setattr(TEXT_FIELDS[field](a), field, value)

    assert rejection(lying(text("\x1b[2Jcleared"))) == "malformed"
    assert rejection(lying(text("nul\x00"))) == "malformed"
    verifier().verify(lying(text("an error:\n\tdetails")))
