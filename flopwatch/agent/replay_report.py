"""`flopwatch replay`: run a recorded trace through the agent's own pipeline, offline.

Readings are attributed, turned into signed records with an ephemeral key, verified as the
collector would, and summed per job: the figures are exactly what a collector would total for
the same trace and jobs. For calibrating the FLOP model and auditing a node's claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flopwatch.agent.backends.replay import ReplayBackend
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attestation import METHOD_FROM_PROTO
from flopwatch.attribution import JobWindow
from flopwatch.keys import SigningKey
from flopwatch.model import MODEL_VERSION
from flopwatch.model.figures import LEGEND
from flopwatch.verify import RecordVerifier


@dataclass
class JobFigures:
    flops: int = 0
    flops_upper: int = 0
    gpu_intervals: int = 0


@dataclass(frozen=True)
class ReplayResult:
    jobs: dict[str, JobFigures]
    methods: frozenset[str]
    intervals: int
    gaps: int
    start_ns: int
    end_ns: int

    def to_json(self) -> dict[str, object]:
        return {
            "jobs": {
                job: {"flops": f.flops, "flops_upper": f.flops_upper}
                for job, f in sorted(self.jobs.items())
            },
            "legend": LEGEND,
            "methods": sorted(self.methods),
            "flop_model_version": MODEL_VERSION,
            "interval": {"start_unix_s": self.start_ns / 1e9, "end_unix_s": self.end_ns / 1e9},
            "gpu_intervals": self.intervals,
            "gaps": self.gaps,
        }


def replay(trace: Path, windows: Sequence[JobWindow]) -> ReplayResult:
    backend = ReplayBackend(trace, speed=None)
    key = SigningKey.generate()
    readings_end = 0
    builder = RecordBuilder(
        node_id="replay",
        cluster="replay",
        signer=key,
        head=ChainHead(),
        now_ns=lambda: readings_end,
    )
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    jobs: dict[str, JobFigures] = {}
    intervals = gaps = 0
    methods: set[str] = set()
    start_ns = end_ns = 0
    while (readings := backend.next_readings()) is not None:
        readings_end = max(r.end_ns for r in readings)
        for env in builder.build_records([(readings, windows)]):
            record = verifier.verify(env)
            intervals += len(record.attestation.intervals)
            methods.update(
                METHOD_FROM_PROTO[iv.method].value for iv in record.attestation.intervals
            )
            gaps += len(record.gaps)
            for c in record.contributions:
                f = jobs.setdefault(c.job_id, JobFigures())
                f.flops += c.flops_estimate
                f.flops_upper += c.flops_upper
                f.gpu_intervals += 1
        start_ns = start_ns or min(r.start_ns for r in readings)
        end_ns = readings_end
    return ReplayResult(
        jobs=jobs,
        methods=frozenset(methods),
        intervals=intervals,
        gaps=gaps,
        start_ns=start_ns,
        end_ns=end_ns,
    )
