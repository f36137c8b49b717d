"""Attribute one GPU interval's work to jobs. Pure.

Inputs: the GPU's per-process shares of the interval (from NVML per-process SM utilization),
the identifiers of the GPU (UUID, MIG instance), and the jobs' claims, each a window of time
[start_ns, end_ns) over one of:

  PROCESS    the work of one pid (Slurm job of the process, a JOBS.json window)
  GPU        all work on one GPU, whatever the processes (Kubernetes PodResources,
             `flopwatch job start --gpus`); ALL_GPUS claims every GPU of the node
  CONTAINER  the work of one pid known only by its container (a pod UID from the cgroup)

Precedence, for each piece of work: a PROCESS claim beats a GPU claim, which beats a CONTAINER
claim. The most specific statement wins: a scheduler that names the process says whose work it
is even on a GPU another job holds, and a GPU's holder takes the work of processes nobody named
(and the work NVML saw no process for) before a pod known only by UID does.

Work is taken as spread evenly over the interval (the finest resolution the counters give), so
the interval is cut where windows start or end; in each piece the strongest claims active split
it equally between the distinct jobs making them. Whatever no claim covers goes to the node's
unattributed job, so nothing measured is dropped. Shares are integers in parts per million that
always sum to exactly 1,000,000.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from flopwatch.model import Precision
from flopwatch.model.flops import PPM

UNATTRIBUTED = "unattributed"
ALL_GPUS = "*"


class Claim(enum.IntEnum):
    """What a window claims; a lower value takes precedence."""

    PROCESS = 1
    GPU = 2
    CONTAINER = 3


@dataclass(frozen=True)
class JobWindow:
    """A job's claim over [start_ns, end_ns) (end_ns None while it runs).

    Give `pid` for the work of a process (`weak=True`: known only by its container), or `gpu`
    (a GPU or MIG UUID, or ALL_GPUS) for all work on a GPU.
    """

    job_id: str
    pid: int | None
    start_ns: int
    end_ns: int | None = None
    precision: Precision = Precision.UNSPECIFIED
    source: str = "manual"
    gpu: str | None = None
    weak: bool = False

    def __post_init__(self) -> None:
        if (self.pid is None) == (self.gpu is None):
            raise ValueError(f"window of {self.job_id!r} must claim either a pid or a GPU")
        if self.weak and self.pid is None:
            raise ValueError(f"window of {self.job_id!r}: only a pid claim can be weak")
        if self.end_ns is not None and self.end_ns < self.start_ns:
            raise ValueError(f"window of {self.job_id!r} ends before it starts")

    @property
    def claim(self) -> Claim:
        if self.gpu is not None:
            return Claim.GPU
        return Claim.CONTAINER if self.weak else Claim.PROCESS

    def covers(self, start_ns: int, end_ns: int) -> bool:
        """Whether the window holds all of [start_ns, end_ns)."""
        return self.start_ns <= start_ns and (self.end_ns is None or self.end_ns >= end_ns)


@dataclass(frozen=True)
class Attribution:
    job_id: str
    share_ppm: int
    precision: Precision
    source: str


def to_ppm(weights: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of non-negative weights to integers summing to PPM."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    exact = [w * PPM / total for w in weights]
    floors = [int(x) for x in exact]
    short = PPM - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (floors[i] - exact[i], i))
    for i in order[:short]:
        floors[i] += 1
    return floors


_Key = tuple[str, Precision, str]


def _pieces(
    windows: Sequence[JobWindow], start_ns: int, end_ns: int
) -> Iterator[tuple[int, list[_Key]]]:
    """Cut [start_ns, end_ns) where windows start or end; yield each piece's length and the
    distinct jobs of the strongest claims that hold it (empty: nobody)."""
    cuts = {start_ns, end_ns}
    for w in windows:
        cuts.update(t for t in (w.start_ns, w.end_ns) if t is not None and start_ns < t < end_ns)
    edges = sorted(cuts)
    for a, b in itertools.pairwise(edges):
        active = [w for w in windows if w.covers(a, b)]
        if not active:
            yield b - a, []
            continue
        strongest = min(w.claim for w in active)
        keys = {(w.job_id, w.precision, w.source) for w in active if w.claim == strongest}
        yield b - a, sorted(keys, key=_order)


def _order(key: _Key) -> tuple[str, str, str]:
    return key[0], key[1].value, key[2]


def attribute(
    start_ns: int,
    end_ns: int,
    processes: Sequence[tuple[int, float]],
    windows: Sequence[JobWindow],
    *,
    gpu_ids: Collection[str] = (),
    unattributed_id: str = UNATTRIBUTED,
) -> list[Attribution]:
    """Split one GPU's interval among jobs.

    `processes` are (pid, share) with shares summing to ~1; with none, the whole interval is
    work of no known process. `gpu_ids` name the GPU (UUID and MIG instance UUID) that GPU
    claims are matched against.
    """
    duration = end_ns - start_ns
    if duration <= 0:
        raise ValueError("interval must have a positive duration")
    ids = frozenset(gpu_ids)
    gpu_claims = [w for w in windows if w.gpu is not None and (w.gpu == ALL_GPUS or w.gpu in ids)]
    by_pid: dict[int, list[JobWindow]] = {}
    for w in windows:
        if w.pid is not None:
            by_pid.setdefault(w.pid, []).append(w)
    work: list[tuple[int | None, float]] = [(p, s) for p, s in processes if s > 0]
    if not work:
        work = [(None, 1.0)]

    weight: dict[_Key, float] = {}
    nobody: _Key = (unattributed_id, Precision.UNSPECIFIED, UNATTRIBUTED)
    for pid, share in work:
        claims = (by_pid.get(pid, []) if pid is not None else []) + gpu_claims
        for length, keys in _pieces(claims, start_ns, end_ns):
            part = share * length / duration
            for key in keys or [nobody]:
                weight[key] = weight.get(key, 0.0) + part / max(len(keys), 1)
    keys = sorted(weight, key=_order)
    ppm = to_ppm([weight[k] for k in keys])
    return [
        Attribution(job_id=k[0], share_ppm=p, precision=k[1], source=k[2])
        for k, p in zip(keys, ppm, strict=True)
        if p > 0
    ]
