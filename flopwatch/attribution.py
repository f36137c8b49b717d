"""Attribute one GPU interval's work to jobs. Pure.

Two inputs: per-process shares of the interval (from NVML per-process SM utilization) and the
jobs known on the node, each a process with a time window. A job gets the work of its process
inside its window: the process's share times the fraction of the interval the window covers
(work is taken as spread evenly over the interval, the finest resolution the counters give).
Whatever no window covers, and work with no process at all, goes to the node's `unattributed`
job, so nothing measured is dropped. Shares are integers in parts per million that always sum to
exactly 1,000,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flopwatch.model import Precision
from flopwatch.model.flops import PPM

UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class JobWindow:
    """A job's claim on a process over [start_ns, end_ns); end_ns None while it runs."""

    job_id: str
    pid: int
    start_ns: int
    end_ns: int | None = None
    precision: Precision = Precision.UNSPECIFIED
    source: str = "manual"


@dataclass(frozen=True)
class Attribution:
    job_id: str
    share_ppm: int
    precision: Precision
    source: str


def _overlap(w: JobWindow, start_ns: int, end_ns: int) -> int:
    hi = end_ns if w.end_ns is None else min(w.end_ns, end_ns)
    return max(0, hi - max(w.start_ns, start_ns))


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


def attribute(
    start_ns: int,
    end_ns: int,
    processes: Sequence[tuple[int, float]],
    windows: Sequence[JobWindow],
    unattributed_id: str = UNATTRIBUTED,
) -> list[Attribution]:
    """Split the interval among jobs. `processes` are (pid, share) with shares summing to ~1."""
    weight: dict[tuple[str, Precision, str], float] = {}

    def add(key: tuple[str, Precision, str], w: float) -> None:
        weight[key] = weight.get(key, 0.0) + w

    duration = end_ns - start_ns
    if duration <= 0:
        raise ValueError("interval must have a positive duration")
    for pid, share in processes:
        rest = share
        for w in windows:
            if w.pid != pid:
                continue
            part = share * min(_overlap(w, start_ns, end_ns) / duration, 1.0)
            if part > 0:
                add((w.job_id, w.precision, w.source), part)
                rest -= part
        if rest > 1e-12:
            add((unattributed_id, Precision.UNSPECIFIED, UNATTRIBUTED), rest)
    if not weight or sum(weight.values()) <= 0:
        return [Attribution(unattributed_id, PPM, Precision.UNSPECIFIED, UNATTRIBUTED)]
    keys = sorted(weight)
    ppm = to_ppm([weight[k] for k in keys])
    return [
        Attribution(job_id=k[0], share_ppm=p, precision=k[1], source=k[2])
        for k, p in zip(keys, ppm, strict=True)
        if p > 0
    ]
