"""The compute-usage predicate, v1: what a collector states about one job's compute. Pure.

Predicate type `COMPUTE_USAGE_V1`; the fields, their meaning and a JSON Schema are in
docs/compute-usage-predicate.md. Field names are lowerCamelCase, times RFC 3339 in UTC ("Z"),
operation counts decimal strings (they pass 2^53, where JSON numbers stop being exact).
`ComputeUsage.to_json` writes the predicate; `from_json` reads one from outside: every field
typed and bounded, unknown fields ignored (in-toto's parsing rules), nothing trusted.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flopwatch.errors import VerificationError
from flopwatch.identifiers import identifier_problem
from flopwatch.model.figures import Method
from flopwatch.tlog.note import MAX_NOTE_BYTES

COMPUTE_USAGE_V1 = "https://flopwatch.dev/compute-usage/v1"
BUNDLE_MEDIA_TYPE = "application/vnd.flopwatch.bundle.v1+protobuf"  # verify.bundle_format's
MALFORMED_PREDICATE = "malformed_predicate"
METHODS = tuple(m.value for m in Method)
NO_CLASS = "unknown"  # the workload class of a run that declared none
MAX_JSON_INT = (1 << 53) - 1  # the largest integer every JSON reader holds exactly
MAX_PROOF_HASHES = 64  # an RFC 6962 inclusion proof in a log of up to 2^64 leaves
# A lineage declaration's envelope, base64: a declaration is at most MAX_RUN_DECLARATION_BYTES
# of payload (flopwatch.statements), signed: 4/3 of that and the envelope's few hundred bytes.
MAX_DECLARATION_BASE64 = 24 * 1024

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,59}")  # FLOPs, exact; 60 digits is far past 1e26
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as an RFC 3339 UTC time; the fraction only as long as it
    needs to be ("2025-01-02T03:04:05Z", "...05.25Z")."""
    seconds, fraction = divmod(ns, 10**9)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{fraction:09d}".rstrip("0") if fraction else "") + "Z"


def parse_rfc3339(value: object, what: str) -> int:
    """An RFC 3339 UTC time as `rfc3339` writes it (or with a longer fraction), in ns."""
    m = _TIME.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise VerificationError(MALFORMED_PREDICATE, f"{what} is not an RFC 3339 UTC time")
    *fields, fraction = m.groups()
    year, month, day, hour, minute, second = map(int, fields)
    try:
        at = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as e:
        raise VerificationError(MALFORMED_PREDICATE, f"{what}: {e}") from e
    whole = (at - _EPOCH) // timedelta(seconds=1)
    return whole * 10**9 + int((fraction or "0").ljust(9, "0"))


@dataclass(frozen=True)
class BundleRef:
    """The report bundle the predicate rests on: every record and its inclusion proof."""

    name: str
    sha256: str  # hex

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": {"sha256": self.sha256},
            "mediaType": BUNDLE_MEDIA_TYPE,
        }


@dataclass(frozen=True)
class ForeignClaim:
    """A parent run held by another collector, as the run claim this collector verified when
    the lineage was declared states it: that collector's key, the claim's SHA-256 (the exact
    envelope bytes the declaration carries) and the cumulative operations it claims."""

    collector_key_id: str  # hex
    sha256: str  # hex, of the serialized run claim envelope
    operations_estimate: int
    operations_upper: int

    def to_json(self) -> dict[str, Any]:
        return {
            "collectorKeyId": self.collector_key_id,
            "digest": {"sha256": self.sha256},
            "cumulativeOperations": {
                "estimate": str(self.operations_estimate),
                "upperBound": str(self.operations_upper),
            },
        }


@dataclass(frozen=True)
class LineageLink:
    """One ancestor of the statement's run, nearest first: the run (`account`, `run`), its class
    as the collector holds it, and the lineage declaration by which the run before it in the
    chain (the statement's run, for the first) derives from it. The declaration is a leaf of
    the collector's log: its index, RFC 6962 leaf hash and inclusion proof at the checkpoint's
    tree, and the leaf's data (the signed declaration envelope), so each link is checked
    offline. `parent_claim` only for a parent on another collector (it ends the chain)."""

    run: str
    account: str  # empty: none known
    workload_class: str
    leaf_index: int
    leaf_hash: str  # hex
    inclusion_proof: tuple[str, ...]  # hex hashes, leaf to root
    declaration: bytes  # the serialized, signed declaration envelope (the leaf's data)
    parent_claim: ForeignClaim | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run": self.run,
            "account": self.account,
            "workloadClass": self.workload_class,
            "declaration": {
                "leafIndex": self.leaf_index,
                "leafHash": self.leaf_hash,
                "inclusionProof": list(self.inclusion_proof),
                "envelope": base64.b64encode(self.declaration).decode("ascii"),
            },
        }
        if self.parent_claim is not None:
            out["parentClaim"] = self.parent_claim.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object, max_chars: int) -> LineageLink:
        r = _Reader(obj, "a lineage entry", max_chars)
        d = _Reader(r.field("declaration", dict), "a lineage declaration", max_chars)
        proof = d.field("inclusionProof", list)
        if len(proof) > MAX_PROOF_HASHES or not all(
            isinstance(h, str) and _HEX64.fullmatch(h) for h in proof
        ):
            raise _fail(
                f"a lineage declaration's inclusionProof is not at most {MAX_PROOF_HASHES} "
                "hex SHA-256 hashes"
            )
        text = d.text("envelope", MAX_DECLARATION_BASE64)
        try:
            envelope = base64.b64decode(text, validate=True)
        except ValueError as e:
            raise _fail("a lineage declaration's envelope is not base64") from e
        if not envelope:
            raise _fail("a lineage declaration's envelope is empty")
        claim = None
        if r.has("parentClaim"):
            c = _Reader(r.field("parentClaim", dict), "a lineage parentClaim", max_chars)
            digest = _Reader(c.field("digest", dict), "parentClaim.digest", max_chars)
            ops = _Reader(
                c.field("cumulativeOperations", dict), "parentClaim.cumulativeOperations", max_chars
            )
            claim = ForeignClaim(
                c.hex64("collectorKeyId"),
                digest.hex64("sha256"),
                ops.decimal("estimate"),
                ops.decimal("upperBound"),
            )
        return cls(
            run=r.identifier("run"),
            account=r.identifier("account", empty=True),
            workload_class=r.identifier("workloadClass"),
            leaf_index=d.integer("leafIndex"),
            leaf_hash=d.hex64("leafHash"),
            inclusion_proof=tuple(proof),
            declaration=envelope,
            parent_claim=claim,
        )


@dataclass(frozen=True)
class ComputeUsage:
    """One job's compute, as the collector states it. FLOPs are exact ints; times in ns."""

    job: str
    run: str  # the job's run: the job itself where its records declare none
    account: str  # empty: no account known
    workload_class: str
    lineage: tuple[LineageLink, ...]  # the run's ancestors, nearest first
    operations_estimate: int
    operations_upper: int  # sound upper bound
    methods: tuple[str, ...]  # sorted, distinct
    flop_model_version: str
    gpu_intervals: int
    window_start_ns: int
    window_end_ns: int
    reported_ns: int  # when the collector signed its claim about the job
    collector_key_id: str
    checkpoint: str  # the C2SP checkpoint (signed note) of the log the records are in
    records: int  # log entries (signed envelopes) that hold the job's work
    bundle: BundleRef

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "run": self.run,
            "account": self.account,
            "workloadClass": self.workload_class,
            "lineage": [link.to_json() for link in self.lineage],
            "operations": {
                "estimate": str(self.operations_estimate),
                "upperBound": str(self.operations_upper),
            },
            "methods": list(self.methods),
            "flopModelVersion": self.flop_model_version,
            "gpuIntervals": self.gpu_intervals,
            "window": {"start": rfc3339(self.window_start_ns), "end": rfc3339(self.window_end_ns)},
            "reportedAt": rfc3339(self.reported_ns),
            "collectorKeyId": self.collector_key_id,
            "checkpoint": self.checkpoint,
            "records": self.records,
            "inclusionProofs": self.bundle.to_json(),
        }

    @classmethod
    def from_json(cls, obj: object, *, max_chars: int, max_lineage: int) -> ComputeUsage:
        """Read a predicate from outside; VerificationError(malformed_predicate) if it is not
        one. Unknown fields are ignored; the fields below are required."""
        p = _Reader(obj, "the predicate", max_chars)
        operations = _Reader(p.field("operations", dict), "operations", max_chars)
        window = _Reader(p.field("window", dict), "window", max_chars)
        lineage = p.field("lineage", list)
        if len(lineage) > max_lineage:
            raise _fail(f"lineage has {len(lineage)} runs, limit {max_lineage}")
        methods = p.field("methods", list)
        if len(methods) > len(METHODS) or any(m not in METHODS for m in methods):
            raise _fail(f"methods must be some of {', '.join(METHODS)}")
        proofs = _Reader(p.field("inclusionProofs", dict), "inclusionProofs", max_chars)
        digest = _Reader(proofs.field("digest", dict), "inclusionProofs.digest", max_chars)
        if proofs.field("mediaType", str) != BUNDLE_MEDIA_TYPE:
            raise _fail(f"inclusionProofs.mediaType is not {BUNDLE_MEDIA_TYPE}")
        return cls(
            job=p.identifier("job"),
            run=p.identifier("run"),
            account=p.identifier("account", empty=True),
            workload_class=p.identifier("workloadClass"),
            lineage=tuple(LineageLink.from_json(r, max_chars) for r in lineage),
            operations_estimate=operations.decimal("estimate"),
            operations_upper=operations.decimal("upperBound"),
            methods=tuple(methods),
            flop_model_version=p.identifier("flopModelVersion"),
            gpu_intervals=p.integer("gpuIntervals"),
            window_start_ns=parse_rfc3339(window.field("start", str), "window.start"),
            window_end_ns=parse_rfc3339(window.field("end", str), "window.end"),
            reported_ns=parse_rfc3339(p.field("reportedAt", str), "reportedAt"),
            collector_key_id=p.hex64("collectorKeyId"),
            checkpoint=p.text("checkpoint", MAX_NOTE_BYTES),
            records=p.integer("records"),
            bundle=BundleRef(proofs.identifier("name"), digest.hex64("sha256")),
        )


def _fail(message: str) -> VerificationError:
    return VerificationError(MALFORMED_PREDICATE, message)


class _Reader:
    """Typed, bounded access to one JSON object from outside."""

    def __init__(self, obj: object, what: str, max_chars: int) -> None:
        if not isinstance(obj, dict):
            raise _fail(f"{what} is not a JSON object")
        self._obj: dict[str, Any] = obj
        self._what = what
        self._max = max_chars

    def has(self, name: str) -> bool:
        return name in self._obj

    def field(self, name: str, kind: type[Any]) -> Any:
        value = self._obj.get(name)
        # bool is an int to Python; never to JSON.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _fail(f"{self._what}: {name} is missing or not a JSON {kind.__name__}")
        return value

    def text(self, name: str, max_chars: int) -> str:
        value: str = self.field(name, str)
        if len(value) > max_chars:
            raise _fail(f"{self._what}: {name} is longer than {max_chars} characters")
        return value

    def identifier(self, name: str, *, empty: bool = False) -> str:
        value: str = self.field(name, str)
        problem = None if empty and not value else identifier_problem(value, self._max)
        if problem is not None:
            raise _fail(f"{self._what}: {name} {problem}")
        return value

    def decimal(self, name: str) -> int:
        value: str = self.field(name, str)
        if not _DECIMAL.fullmatch(value):
            raise _fail(f"{self._what}: {name} is not a decimal string")
        return int(value)

    def integer(self, name: str) -> int:
        value: int = self.field(name, int)
        if not 0 <= value <= MAX_JSON_INT:
            raise _fail(f"{self._what}: {name} is out of range")
        return value

    def fraction(self, name: str) -> float:
        """A JSON number from 0 to 1 (a probability, or a fraction of records)."""
        value = self._obj.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise _fail(f"{self._what}: {name} is missing or not a number from 0 to 1")
        return float(value)

    def hex64(self, name: str) -> str:
        value: str = self.field(name, str)
        if not _HEX64.fullmatch(value):
            raise _fail(f"{self._what}: {name} is not 64 lowercase hex digits")
        return value
