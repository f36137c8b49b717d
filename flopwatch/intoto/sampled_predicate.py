"""The sampled compute-usage predicate, v1: what a collector states about a run's (or a job's)
compute, resting on a sampled report rather than a bundle of every record. Pure.

Predicate type `COMPUTE_USAGE_SAMPLED_V1`, a sibling of `COMPUTE_USAGE_V1` (why a new type and
not a field of the old one: docs/compute-usage-predicate.md, "Runs and sampled reports"); the
fields and the JSON Schema are in docs/compute-usage-sampled-predicate.md. The conventions are
v1's: lowerCamelCase, RFC 3339 UTC times, operation counts as decimal strings, unknown fields
ignored, every known one typed and bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from flopwatch.intoto.predicate import (
    METHODS,
    LineageLink,
    _fail,
    _Reader,
    parse_rfc3339,
    rfc3339,
)
from flopwatch.tlog.note import MAX_NOTE_BYTES

COMPUTE_USAGE_SAMPLED_V1 = "https://flopwatch.dev/compute-usage-sampled/v1"
SAMPLED_REPORT_MEDIA_TYPE = "application/vnd.flopwatch.sampled-report.v1+protobuf"
SCOPE_RUN = "run"
SCOPE_JOB = "job"
# The confidence the stated detectable fractions are for (the verifier prints the same).
GUARANTEE_CONFIDENCE = 0.95
MAX_CLASSES = 16  # distinct workload classes a scope's records may declare
MAX_CHALLENGE_HEX = 128  # the report's challenge: at most 64 bytes

_CHALLENGE = re.compile(r"(?:[0-9a-f]{2}){0,64}")


@dataclass(frozen=True)
class Guarantee:
    """What the report's samples and probes find, with probability `confidence`: a fraction
    `misstated` of the sum tree's records misstated, or `withheld` of the log positions in the
    scope's log window holding records of the scope left out of the totals."""

    confidence: float
    misstated: float
    withheld: float

    def to_json(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "misstatedFraction": self.misstated,
            "withheldFraction": self.withheld,
        }

    def close_to(self, other: Guarantee) -> bool:
        """Equal, up to how another JSON writer may round a double."""
        return all(
            math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
            for a, b in zip(
                (self.confidence, self.misstated, self.withheld),
                (other.confidence, other.misstated, other.withheld),
                strict=True,
            )
        )


@dataclass(frozen=True)
class SampledEvidence:
    """The sampled report the predicate rests on, and the guarantee its verification gives."""

    name: str
    sha256: str  # hex, of the report file
    samples: int
    probes: int
    challenge: str  # hex; empty: none
    guarantee: Guarantee

    def to_json(self) -> dict[str, Any]:
        return {
            "report": {
                "name": self.name,
                "digest": {"sha256": self.sha256},
                "mediaType": SAMPLED_REPORT_MEDIA_TYPE,
            },
            "samples": self.samples,
            "probes": self.probes,
            "challenge": self.challenge,
            "guarantee": self.guarantee.to_json(),
        }

    @classmethod
    def from_json(cls, obj: object, max_chars: int) -> SampledEvidence:
        e = _Reader(obj, "evidence", max_chars)
        report = _Reader(e.field("report", dict), "evidence.report", max_chars)
        if report.field("mediaType", str) != SAMPLED_REPORT_MEDIA_TYPE:
            raise _fail(f"evidence.report.mediaType is not {SAMPLED_REPORT_MEDIA_TYPE}")
        digest = _Reader(report.field("digest", dict), "evidence.report.digest", max_chars)
        challenge = e.text("challenge", MAX_CHALLENGE_HEX)
        if not _CHALLENGE.fullmatch(challenge):
            raise _fail("evidence: challenge is not lowercase hex of at most 64 bytes")
        g = _Reader(e.field("guarantee", dict), "evidence.guarantee", max_chars)
        return cls(
            name=report.identifier("name"),
            sha256=digest.hex64("sha256"),
            samples=e.integer("samples"),
            probes=e.integer("probes"),
            challenge=challenge,
            guarantee=Guarantee(
                g.fraction("confidence"),
                g.fraction("misstatedFraction"),
                g.fraction("withheldFraction"),
            ),
        )


@dataclass(frozen=True)
class SampledUsage:
    """A run's (or a job's) compute as the collector states it from its sampled report's signed
    claim. FLOPs and GPU-time are exact ints; times in ns."""

    scope: str  # SCOPE_RUN or SCOPE_JOB
    job: str  # SCOPE_JOB only; empty for a run
    run: str
    account: str  # empty: none known
    workload_classes: tuple[str, ...]  # sorted, distinct
    lineage: tuple[LineageLink, ...]  # the run's ancestors, nearest first
    operations_estimate: int
    operations_upper: int
    methods: tuple[str, ...]  # sorted, distinct
    flop_model_version: str
    gpu_intervals: int
    gpu_ns: int
    window_start_ns: int
    window_end_ns: int
    first_leaf: int  # the scope's log window: its first and last record's log leaf index
    last_leaf: int
    reported_ns: int  # when the collector signed the sampled report's claim
    collector_key_id: str
    checkpoint: str
    records: int  # leaves of the report's sum tree: log entries with work of the scope
    evidence: SampledEvidence

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope}
        if self.scope == SCOPE_JOB:
            out["job"] = self.job
        out |= {
            "run": self.run,
            "account": self.account,
            "workloadClasses": list(self.workload_classes),
            "lineage": [link.to_json() for link in self.lineage],
            "operations": {
                "estimate": str(self.operations_estimate),
                "upperBound": str(self.operations_upper),
            },
            "methods": list(self.methods),
            "flopModelVersion": self.flop_model_version,
            "gpuIntervals": self.gpu_intervals,
            "gpuNanoseconds": str(self.gpu_ns),
            "window": {"start": rfc3339(self.window_start_ns), "end": rfc3339(self.window_end_ns)},
            "logWindow": {"firstLeaf": self.first_leaf, "lastLeaf": self.last_leaf},
            "reportedAt": rfc3339(self.reported_ns),
            "collectorKeyId": self.collector_key_id,
            "checkpoint": self.checkpoint,
            "records": self.records,
            "evidence": self.evidence.to_json(),
        }
        return out

    @classmethod
    def from_json(cls, obj: object, *, max_chars: int, max_lineage: int) -> SampledUsage:
        """Read a predicate from outside; VerificationError(malformed_predicate) if it is not
        one. Unknown fields are ignored; `job` is required with scope "job", refused with "run"."""
        p = _Reader(obj, "the predicate", max_chars)
        scope = p.field("scope", str)
        if scope not in (SCOPE_RUN, SCOPE_JOB):
            raise _fail(f"scope must be {SCOPE_RUN!r} or {SCOPE_JOB!r}")
        if (scope == SCOPE_JOB) != p.has("job"):
            raise _fail("a job is named with scope 'job', and only then")
        operations = _Reader(p.field("operations", dict), "operations", max_chars)
        window = _Reader(p.field("window", dict), "window", max_chars)
        leaves = _Reader(p.field("logWindow", dict), "logWindow", max_chars)
        lineage = p.field("lineage", list)
        if len(lineage) > max_lineage:
            raise _fail(f"lineage has {len(lineage)} runs, limit {max_lineage}")
        methods = p.field("methods", list)
        if len(methods) > len(METHODS) or any(m not in METHODS for m in methods):
            raise _fail(f"methods must be some of {', '.join(METHODS)}")
        if methods != sorted(set(methods)):
            raise _fail("methods are not sorted and distinct")
        classes = p.field("workloadClasses", list)
        if len(classes) > MAX_CLASSES:
            raise _fail(f"workloadClasses has {len(classes)} entries, limit {MAX_CLASSES}")
        for i, c in enumerate(classes):
            _Reader({"c": c}, f"workloadClasses[{i}]", max_chars).identifier("c")
        if classes != sorted(set(classes)):
            raise _fail("workloadClasses are not sorted and distinct")
        return cls(
            scope=scope,
            job=p.identifier("job") if scope == SCOPE_JOB else "",
            run=p.identifier("run"),
            account=p.identifier("account", empty=True),
            workload_classes=tuple(classes),
            lineage=tuple(LineageLink.from_json(r, max_chars) for r in lineage),
            operations_estimate=operations.decimal("estimate"),
            operations_upper=operations.decimal("upperBound"),
            methods=tuple(methods),
            flop_model_version=p.identifier("flopModelVersion"),
            gpu_intervals=p.integer("gpuIntervals"),
            gpu_ns=p.decimal("gpuNanoseconds"),
            window_start_ns=parse_rfc3339(window.field("start", str), "window.start"),
            window_end_ns=parse_rfc3339(window.field("end", str), "window.end"),
            first_leaf=leaves.integer("firstLeaf"),
            last_leaf=leaves.integer("lastLeaf"),
            reported_ns=parse_rfc3339(p.field("reportedAt", str), "reportedAt"),
            collector_key_id=p.hex64("collectorKeyId"),
            checkpoint=p.text("checkpoint", MAX_NOTE_BYTES),
            records=p.integer("records"),
            evidence=SampledEvidence.from_json(p.field("evidence", dict), max_chars),
        )
