"""The in-toto Statement v1 that carries the compute-usage predicate, signed in DSSE. Pure.

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": ..., "digest": {"sha256": ...}}, ...],
     "predicateType": "https://flopwatch.dev/compute-usage/v1",
     "predicate": {...}}                       (flopwatch.intoto.predicate)

The subject is what the statement is about: by default the report bundle (by its SHA-256), or
artifacts the customer names, such as a model-weights manifest (`--subject NAME=sha256:HEX`).
The statement is serialized once, as compact JSON with sorted keys, and signed as the payload of
a DSSE envelope of type `application/vnd.in-toto+json` with the collector key; a verifier checks
the signature over the exact bytes before it parses them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import ConfigError, VerificationError
from flopwatch.identifiers import identifier_problem
from flopwatch.intoto.dsse_json import envelope_to_json, load_json
from flopwatch.intoto.predicate import COMPUTE_USAGE_V1, ComputeUsage
from flopwatch.intoto.sampled_predicate import COMPUTE_USAGE_SAMPLED_V1, SampledUsage

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MALFORMED_STATEMENT = "malformed_statement"

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StatementLimits:
    """Bounds on what is read of a statement, before it is read. A statement is a few KiB."""

    max_envelope_bytes: int = 256 * 1024
    max_subjects: int = 64
    max_lineage: int = 64
    max_string_chars: int = 256  # a subject's name, a job, run or account


DEFAULT_STATEMENT_LIMITS = StatementLimits()


@dataclass(frozen=True)
class Subject:
    """An artifact the statement is about: a name and its SHA-256 (hex)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        problem = identifier_problem(self.name, DEFAULT_STATEMENT_LIMITS.max_string_chars)
        if problem is not None:
            raise ValueError(f"subject name {problem}")
        if not _HEX64.fullmatch(self.sha256):
            raise ValueError("a subject's sha256 is 64 lowercase hex digits")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


def parse_subject(text: str) -> Subject:
    """`NAME=sha256:HEX`, as `flopwatch report --subject` takes it; ConfigError if not."""
    name, sep, digest = text.rpartition("=")
    algorithm, colon, hexdigits = digest.partition(":")
    if not sep or not colon or algorithm != "sha256":
        raise ConfigError(f"--subject {text[:80]!r} is not NAME=sha256:HEX")
    try:
        return Subject(name, hexdigits.lower())
    except ValueError as e:
        raise ConfigError(f"--subject {text[:80]!r}: {e}") from e


def statement_bytes(subjects: Sequence[Subject], usage: ComputeUsage | SampledUsage) -> bytes:
    """The Statement, serialized once: compact JSON, keys sorted, ASCII. Its predicate type is
    `usage`'s: compute-usage (a bundle's) or compute-usage-sampled (a sampled report's)."""
    if not subjects:
        raise ValueError("a statement needs at least one subject")
    kind = COMPUTE_USAGE_SAMPLED_V1 if isinstance(usage, SampledUsage) else COMPUTE_USAGE_V1
    statement = {
        "_type": STATEMENT_V1,
        "subject": [s.to_json() for s in subjects],
        "predicateType": kind,
        "predicate": usage.to_json(),
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("ascii")


def sign_statement(
    subjects: Sequence[Subject], usage: ComputeUsage | SampledUsage, signer: Signer
) -> bytes:
    """The signed statement as a JSON DSSE envelope (one line), what the report writes."""
    envelope = Envelope.sign(statement_bytes(subjects, usage), signer, INTOTO_PAYLOAD_TYPE)
    return envelope_to_json(envelope)


def _fail(message: str) -> VerificationError:
    return VerificationError(MALFORMED_STATEMENT, message)


def _subject(obj: object, i: int) -> Subject:
    if not isinstance(obj, dict) or not isinstance(obj.get("digest"), dict):
        raise _fail(f"subject {i} is not an object with a digest")
    name, sha256 = obj.get("name", "_"), obj["digest"].get("sha256")
    if not isinstance(name, str) or not isinstance(sha256, str):
        raise _fail(f"subject {i} has no sha256 digest")
    try:
        return Subject(name, sha256)
    except ValueError as e:
        raise _fail(f"subject {i}: {e}") from e


def _statement(
    payload: bytes, limits: StatementLimits, predicate_type: str
) -> tuple[tuple[Subject, ...], object]:
    """A Statement v1 of `predicate_type`: its subjects and its predicate, still unread."""
    obj = load_json(payload, limits.max_envelope_bytes, MALFORMED_STATEMENT, "the statement")
    if not isinstance(obj, dict) or obj.get("_type") != STATEMENT_V1:
        raise _fail(f"not an in-toto Statement v1 (_type {STATEMENT_V1})")
    if obj.get("predicateType") != predicate_type:
        kind = obj.get("predicateType")
        raise _fail(f"predicateType {str(kind)[:80]!r} is not {predicate_type}")
    subjects = obj.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _fail("the statement names no subject")
    if len(subjects) > limits.max_subjects:
        raise _fail(f"{len(subjects)} subjects, limit {limits.max_subjects}")
    return tuple(_subject(s, i) for i, s in enumerate(subjects)), obj.get("predicate")


def parse_statement(
    payload: bytes, limits: StatementLimits = DEFAULT_STATEMENT_LIMITS
) -> tuple[tuple[Subject, ...], ComputeUsage]:
    """Read a statement's payload (after its signature was checked): its subjects and its
    compute-usage predicate. VerificationError(malformed_statement or malformed_predicate)."""
    subjects, predicate = _statement(payload, limits, COMPUTE_USAGE_V1)
    usage = ComputeUsage.from_json(
        predicate, max_chars=limits.max_string_chars, max_lineage=limits.max_lineage
    )
    return subjects, usage


def parse_sampled_statement(
    payload: bytes, limits: StatementLimits = DEFAULT_STATEMENT_LIMITS
) -> tuple[tuple[Subject, ...], SampledUsage]:
    """`parse_statement` for the compute-usage-sampled predicate (a sampled report's)."""
    subjects, predicate = _statement(payload, limits, COMPUTE_USAGE_SAMPLED_V1)
    usage = SampledUsage.from_json(
        predicate, max_chars=limits.max_string_chars, max_lineage=limits.max_lineage
    )
    return subjects, usage
