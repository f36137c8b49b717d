"""Coverage-guided fuzzing (atheris, libFuzzer) of the envelope parser and the record verifier.

    .venv/bin/python tests/hostile/fuzz_envelope.py -atheris_runs=200000 [CORPUS_DIR ...]
    make fuzz                       # the same, bounded by FUZZ_RUNS

Each input's first byte (mod 3) picks what the rest is:
  0: DSSE envelope bytes, as the collector receives them: parsed, then verified against a
     trusted key. Nothing may verify except the seed record itself.
  1: an attestation payload that the trusted node key signs, so the signature passes and the
     content checks (counters, figures, shares, times, limits) see every input.
  2: a recipe of field edits to an honest attestation (which field, what value: counters up to
     uint64 max, times, shares, figures, GPU identity, enums, chain, text with control and
     format characters spliced in), optionally with the
     figures recomputed from the edited counters, then signed by the trusted key. Byte-level
     mutation rarely yields such records; this mode reaches the checks behind the parser.
Any exception other than VerificationError is a crash: libFuzzer stops and writes the input to
crash-<sha1>. The first CORPUS_DIR (a temporary one if none is given) is seeded, when empty,
with an honest record in each form. The flopwatch modules are instrumented for coverage;
protobuf's C parser is not.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["flopwatch"]):
    from flopwatch.attestation import counters_of
    from flopwatch.dsse import Envelope
    from flopwatch.errors import VerificationError
    from flopwatch.identifiers import identifier_problem
    from flopwatch.limits import DEFAULT_LIMITS
    from flopwatch.model.flops import physical_peak
    from flopwatch.verify import RecordVerifier, VerifiedRecord

from flopwatch.v1 import attestation_pb2 as pb
from tests.hostile.fuzz_common import fuzz_main
from tests.hostile.hostile_helpers import (
    INT64_MAX,
    INT64_MIN,
    NODE_KEY,
    NOW,
    UINT32_MAX,
    UINT64_MAX,
    attestation,
    refigure,
    signed,
)

SEED = signed(attestation())
VERIFIER = RecordVerifier(trusted_keys={NODE_KEY.key_id: NODE_KEY.public_key}, now_ns=lambda: NOW)


def check(record: VerifiedRecord) -> None:
    """What every record that verifies must satisfy."""
    assert record.key_id == NODE_KEY.key_id
    lim = DEFAULT_LIMITS
    for c in record.contributions:
        assert c.flops_estimate <= c.flops_upper, f"estimate above the upper bound: {c}"
        assert 0 < c.start_ns < c.end_ns <= NOW + lim.max_clock_skew_ns, c
        assert c.end_ns >= NOW - lim.max_record_age_ns, c
    att = record.attestation
    # Every identifier a verified record names obeys the one rule (flopwatch.identifiers).
    ids = [att.node_id, *(j.job_id for iv in att.intervals for j in iv.jobs)]
    ids += [g.uuid for g in att.gpus]
    ids += [v for v in (att.cluster, *(g.mig_instance for g in att.gpus)) if v]
    for value in ids:
        assert identifier_problem(value, lim.max_identifier_chars) is None, repr(value)
    measured: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for iv in att.intervals:
        gpu = att.gpus[iv.gpu]
        peak = physical_peak(counters_of(gpu, iv))
        assert iv.flops_upper <= peak, "a verified interval claims more than the physical peak"
        measured.setdefault((gpu.uuid, gpu.mig_instance), []).append(
            (iv.start_unix_ns, iv.end_unix_ns)
        )
    for runs in measured.values():  # no device-second is counted twice
        runs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), runs


# -- mode 2: field edits ---------------------------------------------------------------------
Fdp = atheris.FuzzedDataProvider
PIPES = ("hmma", "imma", "dfma_tensor", "fp64", "fp32", "fp16")


def number(fdp: Fdp, current: int, lo: int, hi: int) -> int:
    """Near the current value (where the edge cases are) or anywhere in the field's range."""
    if fdp.ConsumeBool():
        return min(hi, max(lo, current + fdp.ConsumeIntInRange(-(2**20), 2**20)))
    return int(fdp.ConsumeIntInRange(lo, hi))


# Characters an identifier must not hold, spliced into text now and then so that the rule is
# reached far more often than random Unicode would (NUL, ESC sequences, line breaks, bidi).
HOSTILE_CHARS = ("\x00", "\x1b[2J", "\n", "\r", "\x7f", "\x9b", "\u200d", "\u202e", "\u2028")


def text(fdp: Fdp) -> str:
    value = str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300)))
    if value and fdp.ConsumeBool():
        at = fdp.ConsumeIntInRange(0, len(value))
        value = value[:at] + HOSTILE_CHARS[fdp.ConsumeIntInRange(0, 8)] + value[at:]
    return value


def edit_counter(a: pb.Attestation, fdp: Fdp) -> None:
    iv = a.intervals[fdp.ConsumeIntInRange(0, len(a.intervals) - 1)]
    pipe = fdp.ConsumeIntInRange(0, len(PIPES))
    target, field = (
        (iv, "elapsed_sm_cycles")
        if pipe == len(PIPES)
        else (
            iv.active_sm_cycles,
            PIPES[pipe],
        )
    )
    setattr(target, field, number(fdp, getattr(target, field), 0, UINT64_MAX))


def edit_time(a: pb.Attestation, fdp: Fdp) -> None:
    target = a.intervals[0] if fdp.ConsumeBool() or not a.gaps else a.gaps[0]
    field = "start_unix_ns" if fdp.ConsumeBool() else "end_unix_ns"
    setattr(target, field, number(fdp, getattr(target, field), INT64_MIN, INT64_MAX))


def edit_job(a: pb.Attestation, fdp: Fdp) -> None:
    iv = a.intervals[0]
    if fdp.ConsumeBool():
        iv.jobs.add().CopyFrom(iv.jobs[0])
    job = iv.jobs[fdp.ConsumeIntInRange(0, len(iv.jobs) - 1)]
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        job.share_ppm = number(fdp, job.share_ppm, 0, UINT32_MAX)
    elif choice == 1:
        job.declared_precision = fdp.ConsumeIntInRange(-1, 8)
    elif choice == 2:
        job.job_id = text(fdp)
    else:
        field = "flops_estimate" if choice == 3 else "flops_upper"
        setattr(job, field, number(fdp, getattr(job, field), 0, UINT64_MAX))


def edit_interval(a: pb.Attestation, fdp: Fdp) -> None:
    iv = a.intervals[0]
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 0:
        iv.method = fdp.ConsumeIntInRange(-1, 4)
    elif choice == 1:
        iv.utilization_centipercent = number(fdp, 0, 0, UINT32_MAX)
    elif choice == 2:
        iv.gpu = number(fdp, 0, 0, UINT32_MAX)
    elif choice == 3:
        copy = a.intervals.add()  # on any GPU entry, near the original or anywhere
        copy.CopyFrom(iv)
        copy.gpu = fdp.ConsumeIntInRange(0, len(a.gpus))
        span = min(2 * abs(iv.end_unix_ns - iv.start_unix_ns), INT64_MAX // 2)
        shift = (
            fdp.ConsumeIntInRange(-span, span)
            if fdp.ConsumeBool()
            else fdp.ConsumeIntInRange(INT64_MIN // 2, INT64_MAX // 2)
        )
        copy.start_unix_ns = max(INT64_MIN, min(INT64_MAX, iv.start_unix_ns + shift))
        copy.end_unix_ns = max(INT64_MIN, min(INT64_MAX, iv.end_unix_ns + shift))
    else:
        field = "flops_estimate" if choice == 4 else "flops_upper"
        setattr(iv, field, number(fdp, getattr(iv, field), 0, UINT64_MAX))


def edit_gpu(a: pb.Attestation, fdp: Fdp) -> None:
    gpu = a.gpus[0]
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 0:
        gpu.sm_count = number(fdp, gpu.sm_count, 0, UINT32_MAX)
    elif choice == 1:
        gpu.max_sm_clock_mhz = number(fdp, gpu.max_sm_clock_mhz, 0, UINT32_MAX)
    elif choice == 2:
        gpu.cc_major, gpu.cc_minor = fdp.ConsumeIntInRange(0, 20), fdp.ConsumeIntInRange(0, 20)
    elif choice == 3:
        gpu.uuid = text(fdp)
    elif choice == 4:
        a.gpus.add().CopyFrom(gpu)
    else:
        a.gaps.add(
            gpu=fdp.ConsumeIntInRange(0, 2),
            start_unix_ns=a.intervals[0].start_unix_ns,
            end_unix_ns=a.intervals[0].end_unix_ns,
            reason=fdp.ConsumeIntInRange(-1, 7),
        )


def edit_record(a: pb.Attestation, fdp: Fdp) -> None:
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        a.sequence = number(fdp, a.sequence, 0, UINT64_MAX)
    elif choice == 1:
        a.previous_digest = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    elif choice == 2:
        a.key_id = text(fdp) if fdp.ConsumeBool() else a.key_id[:-1]
    elif choice == 3:
        a.flop_model_version = text(fdp)
    else:
        a.node_id = text(fdp)


EDITS = (edit_counter, edit_time, edit_job, edit_interval, edit_gpu, edit_record)


def edited_payload(recipe: bytes) -> bytes:
    fdp = Fdp(recipe)
    att = attestation()
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        EDITS[fdp.ConsumeIntInRange(0, len(EDITS) - 1)](att, fdp)
    if fdp.ConsumeBool():
        # A lying node that knows the model: only the counters are wrong. (Not possible with an
        # unknown method or precision, or a GPU index outside the record.)
        with contextlib.suppress(KeyError, IndexError):
            refigure(att)
    return att.SerializeToString()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    try:
        if mode == 0:
            record = VERIFIER.verify(Envelope.from_bytes(body))
            assert record.digest == SEED.digest, "a changed envelope verified"
        else:
            payload = body if mode == 1 else edited_payload(body)
            record = VERIFIER.verify(Envelope.sign(payload, NODE_KEY))
    except VerificationError:
        return
    check(record)


if __name__ == "__main__":
    fuzz_main(
        test_one_input,
        {
            "envelope": b"\x00" + SEED.to_bytes(),
            "payload": b"\x01" + SEED.payload,
            "recipe": b"\x02" + bytes(64),
        },
    )
