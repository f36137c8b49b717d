"""The simulated fleet the fault tests run, and what it signs when nothing goes wrong.

Each node is a seeded simulator (flopwatch.agent.backends.sim) with a fixed number of intervals and
a fixed start, so its readings do not depend on pacing, crashes or the network. `signed_offline`
puts those readings through the agent's own RecordBuilder and the verifier, with no spool, no
network and no collector: the records an uninterrupted agent would sign. Their per-job sums are the
figures a collector must end up with after any fault that loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flopwatch.agent.backends.sim import SIM_PID_BASE, SimBackend
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.store.records import gpu_seconds, kwh
from flopwatch.jobs_file import load_jobs
from flopwatch.keys import SigningKey
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord

CLUSTER = "faults"
# {"job": {"flops": estimate, "flops_upper": upper bound}}, as `flopwatch jobs --json` prints.
Totals = dict[str, dict[str, int]]
# {(account, run) or account: {"flops": N, "flops_upper": N, "gpu_seconds": X, "energy_kwh": X}},
# from `flopwatch runs --json` and the all-time figures of `flopwatch accounts --json`.
RunFigures = dict[str, float | int]


@dataclass(frozen=True)
class SimNode:
    """One simulated node: `gpus` GPUs, `intervals` readings of `interval_s` from `start_ns`."""

    node_id: str
    seed: int
    start_ns: int
    intervals: int = 200
    gpus: int = 2
    interval_s: float = 0.05

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.intervals * round(self.interval_s * 1e9)

    def backend(self, *, realtime: bool) -> SimBackend:
        return SimBackend(
            self.gpus,
            interval_s=self.interval_s,
            seed=self.seed,
            start_ns=self.start_ns,
            realtime=realtime,
            limit=self.intervals,
        )


def fleet(n: int, start_ns: int, *, intervals: int = 200) -> list[SimNode]:
    """`n` nodes with distinct seeds (so distinct GPU uuids) over the same seconds."""
    return [SimNode(f"node-{i}", 100 + i, start_ns, intervals) for i in range(n)]


def write_jobs(path: Path, start_ns: int, span_s: float) -> list[JobWindow]:
    """A jobs file shared by every node, so each job spans the whole fleet.

    GPU 0 runs a pretraining job, then a fine-tune that starts part-way through an interval
    (that interval is split between the two); GPU 1 runs an evaluation job throughout. Both
    jobs of GPU 0 add to one run of account acme (its classes: pretraining, fine-tuning); the
    evaluation job declares neither run nor account (a run of its own, no account).
    """
    t0 = start_ns / 1e9
    switch = t0 + span_s * 0.43 + 0.0123
    far = t0 + span_s + 3600.0
    jobs = [
        {
            "job": "pretrain-7b",
            "pid": SIM_PID_BASE,
            "start": t0 - 1,
            "end": switch,
            "run": "model-7b",
            "account": "acme",
            "class": "pretraining",
        },
        {
            "job": "finetune-7b",
            "pid": SIM_PID_BASE,
            "start": switch,
            "end": far,
            "precision": "fp8",
            "run": "model-7b",
            "account": "acme",
            "class": "fine-tuning",
        },
        {"job": "eval-70b", "pid": SIM_PID_BASE + 1, "start": t0 - 1, "end": far},
    ]
    path.write_text(json.dumps(jobs))
    return load_jobs(path)


def signed_offline(node: SimNode, windows: Sequence[JobWindow]) -> list[VerifiedRecord]:
    """The records an uninterrupted agent signs for `node`; record k has sequence k + 1."""
    key = SigningKey.generate()
    builder = RecordBuilder(
        node_id=node.node_id, cluster=CLUSTER, signer=key, head=ChainHead(), now_ns=lambda: 0
    )
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    backend = node.backend(realtime=False)
    out = []
    while (readings := backend.next_readings()) is not None:
        out.append(verifier.verify(builder.build(readings, windows)))
    return out


def job_totals(records: Iterable[VerifiedRecord]) -> Totals:
    """Per-job sums of the records' contributions, exact."""
    out: Totals = {}
    for r in records:
        for c in r.contributions:
            t = out.setdefault(c.job_id, {"flops": 0, "flops_upper": 0})
            t["flops"] += c.flops_estimate
            t["flops_upper"] += c.flops_upper
    return dict(sorted(out.items()))


def run_totals(records: Iterable[VerifiedRecord]) -> dict[tuple[str, str], RunFigures]:
    """Per (account, run): FLOPs (exact), GPU-seconds and GPU energy (kWh) from each record's
    intervals, every job's share of the interval's time and energy (as `flopwatch runs` shows
    them: exact sums, then converted once)."""
    sums: dict[tuple[str, str], list[int]] = {}
    for r in records:
        for iv in r.attestation.intervals:
            for j in iv.jobs:
                t = sums.setdefault((j.account, j.run or j.job_id), [0, 0, 0, 0])
                t[0] += j.flops_estimate
                t[1] += j.flops_upper
                t[2] += (iv.end_unix_ns - iv.start_unix_ns) * j.share_ppm
                t[3] += iv.energy_mj * j.share_ppm
    return {key: _figures(t) for key, t in sorted(sums.items())}


def account_totals(records: Iterable[VerifiedRecord]) -> dict[str, RunFigures]:
    """`run_totals` added up per account."""
    sums: dict[str, list[int]] = {}
    for r in records:
        for iv in r.attestation.intervals:
            for j in iv.jobs:
                t = sums.setdefault(j.account, [0, 0, 0, 0])
                t[0] += j.flops_estimate
                t[1] += j.flops_upper
                t[2] += (iv.end_unix_ns - iv.start_unix_ns) * j.share_ppm
                t[3] += iv.energy_mj * j.share_ppm
    return {key: _figures(t) for key, t in sorted(sums.items())}


def _figures(t: list[int]) -> RunFigures:
    return {
        "flops": t[0],
        "flops_upper": t[1],
        "gpu_seconds": gpu_seconds(t[2]),
        "energy_kwh": kwh(t[3]),
    }


def contributions(records: Iterable[VerifiedRecord]) -> int:
    """(GPU interval, job) contributions: what ListJobs counts as gpu_intervals."""
    return sum(len(r.contributions) for r in records)
