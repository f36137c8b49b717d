"""Shared pieces of the hostile-input tests.

- Fixed node keys (derived from a name), so every envelope and every generated example is the
  same on every run.
- Honest records built with the agent's own code (`make_interval`), which the tests then corrupt
  and, where the attack is a lying node, sign again with the trusted key so that the content
  checks, not the signature check, are what stops them.
- A raw protobuf wire encoder, for payloads the generated classes cannot express (a field sent
  with the wrong wire type, a float NaN where a counter belongs, duplicated fields).
- The hypothesis settings: bounded and derandomized, so CI is deterministic and fast.

(Named hostile_helpers, not helpers, so it cannot collide with another test folder's module.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from flopwatch.attestation import (
    METHOD_FROM_PROTO,
    PRECISION_FROM_PROTO,
    counters_of,
    make_interval,
)
from flopwatch.attribution import Attribution
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.model import MODEL_VERSION, Counters, Pipe, Precision
from flopwatch.model.figures import Method, job_figures, whole_gpu_upper
from flopwatch.model.flops import PPM
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier

S = 10**9
T0 = 1_800_000_000 * S
NOW = T0 + 86400 * S  # the verifier's clock: a day after the records the tests build
UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Bounded and derandomized: the same examples on every run. Tests pick max_examples with
# settings(HOSTILE, max_examples=n) so the whole hostile suite stays well under a minute.
HOSTILE = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

# Longest explanation a rejection may carry: hostile text is never echoed whole into acks and logs.
MAX_DETAIL_CHARS = 512
# What the envelope parser may say about bytes it cannot use.
PARSE_REASONS = frozenset({"malformed", "unsigned", "oversized"})
# What signature verification may say about an envelope that is not what a trusted key signed.
SIGNATURE_REASONS = frozenset({"wrong_payload_type", "unknown_key", "bad_signature"})


def fixed_key(name: str) -> SigningKey:
    """An Ed25519 key derived from `name`: the same key, and the same signatures, every run."""
    seed = hashlib.sha256(f"flopwatch hostile test key: {name}".encode()).digest()
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


NODE_KEY = fixed_key("node")
STRANGER_KEY = fixed_key("stranger")


def h100(uuid: str = "GPU-hostile-0") -> pb.GpuIdentity:
    return pb.GpuIdentity(
        uuid=uuid,
        name="NVIDIA H100 80GB HBM3",
        sm_count=132,
        cc_major=9,
        cc_minor=0,
        max_sm_clock_mhz=1980,
    )


def counters(
    gpu: pb.GpuIdentity,
    *,
    seconds: int = 1,
    clock_mhz: int = 1800,
    busy: dict[Pipe, float] | None = None,
    elapsed: int | None = None,
    active: dict[Pipe, int] | None = None,
) -> Counters:
    """Counters of one GPU interval: honest by default (busy fractions of the clock integral);
    `elapsed` and `active` override the raw counts for hostile ones."""
    duration = seconds * S
    if elapsed is None:
        elapsed = gpu.sm_count * clock_mhz * duration // 1000
    if active is None:
        fractions = busy if busy is not None else {Pipe.HMMA: 0.5, Pipe.FP32: 0.05}
        active = {p: round(f * elapsed) for p, f in fractions.items()}
    return Counters(
        cc=(gpu.cc_major, gpu.cc_minor),
        sm_count=gpu.sm_count,
        max_sm_clock_mhz=gpu.max_sm_clock_mhz,
        duration_ns=duration,
        elapsed_sm_cycles=elapsed,
        active=active,
    )


def interval(
    c: Counters,
    *,
    gpu: int = 0,
    start: int = T0,
    shares: Sequence[tuple[str, int]] = (("slurm:c/1", PPM),),
    method: Method = Method.GPM,
    precision: Precision = Precision.BF16,
    utilization_centipercent: int = 0,
) -> pb.GpuInterval:
    """A GPU interval whose figures the FLOP model derived from `c` (so they recompute)."""
    return make_interval(
        gpu_index=gpu,
        counters=c,
        method=method,
        start_ns=start,
        end_ns=start + c.duration_ns,
        attributions=[Attribution(job, ppm, precision, "manual") for job, ppm in shares],
        energy_mj=700_000,
        clock_samples=10,
        utilization_centipercent=utilization_centipercent,
    )


def attestation(
    *,
    key: SigningKey = NODE_KEY,
    gpus: Sequence[pb.GpuIdentity] | None = None,
    intervals: Sequence[pb.GpuInterval] | None = None,
    sequence: int = 1,
    previous_digest: bytes = b"",
) -> pb.Attestation:
    """An honest attestation: one H100, one second at T0 unless told otherwise."""
    gpus = [h100()] if gpus is None else list(gpus)
    if intervals is None:
        intervals = [interval(counters(gpus[0]))]
    return pb.Attestation(
        node_id="node-hostile",
        key_id=key.key_id,
        agent_version="test",
        flop_model_version=MODEL_VERSION,
        sequence=sequence,
        previous_digest=previous_digest,
        cluster="c",
        signed_at_unix_ns=T0,
        gpus=gpus,
        intervals=intervals,
    )


def signed(att: pb.Attestation | bytes, key: SigningKey = NODE_KEY) -> Envelope:
    """Sign an attestation (or raw payload bytes) with `key`, as a lying node would."""
    payload = att if isinstance(att, bytes) else att.SerializeToString(deterministic=True)
    return Envelope.sign(payload, key)


def edited(edit: Callable[[pb.Attestation], None], key: SigningKey = NODE_KEY) -> Envelope:
    """An honest attestation, edited by `edit`, signed by the trusted node key."""
    att = attestation(key=key)
    edit(att)
    return signed(att, key)


def refigure(att: pb.Attestation) -> None:
    """Put into each interval the figures the FLOP model derives from its (possibly hostile)
    counters, as a lying node that knows the model would: then only the counters are wrong.
    Figures above what a uint64 field holds are clamped (the record cannot carry them)."""
    for iv in att.intervals:
        c = counters_of(att.gpus[iv.gpu], iv)
        method = METHOD_FROM_PROTO[iv.method]
        for j in iv.jobs:
            precision = PRECISION_FROM_PROTO[j.declared_precision]
            f = job_figures(c, method, j.share_ppm, precision, iv.utilization_centipercent)
            j.flops_estimate = _clamp(f.flops_estimate)
            j.flops_upper = _clamp(f.flops_upper)
        iv.flops_upper = _clamp(whole_gpu_upper(c, method, iv.utilization_centipercent))
        iv.flops_estimate = _clamp(sum(j.flops_estimate for j in iv.jobs))


def _clamp(value: int) -> int:
    return min(max(value, 0), UINT64_MAX)


def verifier(key: SigningKey = NODE_KEY, *, now: int | None = NOW) -> RecordVerifier:
    """Trusts `key`; checks clock skew against `now` (None: offline, no clock)."""
    return RecordVerifier(
        trusted_keys={key.key_id: key.public_key},
        now_ns=(lambda: now) if now is not None else None,
    )


def rejection(env: Envelope | bytes, v: RecordVerifier | None = None) -> str:
    """The reason code the verifier rejects `env` with; fails the test if it is accepted."""
    v = v or verifier()
    with pytest.raises(VerificationError) as e:
        if isinstance(env, bytes):
            v.verify_bytes(env)
        else:
            v.verify(env)
    assert len(e.value.message) <= MAX_DETAIL_CHARS, e.value.message[:1000]
    assert e.value.message.isprintable(), f"control characters in {e.value.message!r}"
    return e.value.reason


# -- protobuf wire format, by hand -----------------------------------------------------------
VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer (negative int64 values: pass n % 2**64)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def field_varint(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)


def field_bytes(field: int, data: bytes) -> bytes:
    return tag(field, LEN) + varint(len(data)) + data


def field_fixed64(field: int, raw: bytes) -> bytes:
    assert len(raw) == 8
    return tag(field, I64) + raw


def top_level_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """Split well-formed protobuf bytes into (field number, wire type, whole field bytes)."""
    fields = []
    i = 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        wire_type = key & 7
        if wire_type == VARINT:
            _, i = _read_varint(data, i)
        elif wire_type == I64:
            i += 8
        elif wire_type == I32:
            i += 4
        elif wire_type == LEN:
            length, i = _read_varint(data, i)
            i += length
        else:
            raise ValueError(f"wire type {wire_type} not used by flopwatch messages")
        fields.append((key >> 3, wire_type, data[start:i]))
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            return n, i


def any_field(number: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    """One field with a number from `number` and any wire type (wrong ones included)."""
    return st.one_of(
        st.builds(lambda n, v: tag(n, VARINT) + varint(v), number, st.integers(0, 2**64 - 1)),
        st.builds(lambda n, b: tag(n, I64) + b, number, st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, b: tag(n, I32) + b, number, st.binary(min_size=4, max_size=4)),
        st.builds(field_bytes, number, st.binary(max_size=64)),
        # A length prefix that lies about what follows.
        st.builds(
            lambda n, d, extra: tag(n, LEN) + varint(len(d) + extra) + d,
            number,
            st.binary(max_size=16),
            st.integers(1, 2**32),
        ),
    )


MUTATIONS = ("flip", "truncate", "extend", "insert", "dup", "drop")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, extra: st.SearchStrategy[bytes] | None = None) -> bytes:
    """`base` after 1-4 random mutations: bit flips, truncation, bytes or fields appended
    (`extra`, default: any field), random bytes inserted, a top-level field duplicated or
    dropped."""
    extra = extra if extra is not None else any_field(st.integers(1, 2**29 - 1))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(MUTATIONS))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64) | extra)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind in ("dup", "drop"):
            try:
                fields = top_level_fields(bytes(data))
            except (ValueError, IndexError):
                continue  # no longer well-formed: nothing to duplicate or drop
            if not fields:
                continue
            i = draw(st.integers(0, len(fields) - 1))
            if kind == "dup":
                fields.insert(draw(st.integers(0, len(fields))), fields[i])
            else:
                del fields[i]
            data = bytearray(b"".join(f for _, _, f in fields))
    return bytes(data)
