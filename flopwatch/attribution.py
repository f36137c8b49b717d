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

Each window also names the job's run, account and workload class (flopwatch/runs.py). A job
belongs to one run and one account: where its windows disagree (two processes of one Slurm job
declaring different runs), `settle` gives every window of the job the labels of one of them,
the first in this order: a window that declares a run before one that does not, then the
strongest claim, the earliest start, and the smallest (run, account, class, run source, parent
run) as text. So the choice depends on the windows only, never on their order.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from flopwatch.model import Precision
from flopwatch.model.flops import PPM
from flopwatch.runs import WorkloadClass

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
    (a GPU or MIG UUID, or ALL_GPUS) for all work on a GPU. `run` empty: the job is a run of its
    own; `account` empty: none known; `run_source` says where a declared run came from.
    """

    job_id: str
    pid: int | None
    start_ns: int
    end_ns: int | None = None
    precision: Precision = Precision.UNSPECIFIED
    source: str = "manual"
    gpu: str | None = None
    weak: bool = False
    run: str = ""
    account: str = ""
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    run_source: str = ""
    run_parent: str = ""
    _labels: Labels = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.pid is None) == (self.gpu is None):
            raise ValueError(f"window of {self.job_id!r} must claim either a pid or a GPU")
        if self.weak and self.pid is None:
            raise ValueError(f"window of {self.job_id!r}: only a pid claim can be weak")
        if self.end_ns is not None and self.end_ns < self.start_ns:
            raise ValueError(f"window of {self.job_id!r} ends before it starts")
        # A run equal to the job id is the job's own run, written empty (and without a source
        # or a parent: only a declared run has a parent; the agent counts a parent it drops).
        if not self.run or self.run == self.job_id:
            labels = Labels("", self.account, self.workload_class, "", "")
        else:
            labels = Labels(
                self.run, self.account, self.workload_class, self.run_source, self.run_parent
            )
        object.__setattr__(self, "_labels", labels)  # asked for per piece of every interval

    @property
    def claim(self) -> Claim:
        if self.gpu is not None:
            return Claim.GPU
        return Claim.CONTAINER if self.weak else Claim.PROCESS

    def covers(self, start_ns: int, end_ns: int) -> bool:
        """Whether the window holds all of [start_ns, end_ns)."""
        return self.start_ns <= start_ns and (self.end_ns is None or self.end_ns >= end_ns)

    @property
    def labels(self) -> Labels:
        """The job's run, account, class, run source and parent run; a run equal to the job id
        is the job's own run, written empty (and without a source or a parent)."""
        return self._labels


class Labels(NamedTuple):
    """What a window says about its job's place above the job (flopwatch/runs.py)."""

    run: str  # empty: the job is a run of its own
    account: str  # empty: no account known
    workload_class: WorkloadClass
    run_source: str  # empty with an empty run
    run_parent: str = ""  # the run's parent run (same account); empty with an empty run

    def order(self) -> tuple[bool, str, str, str, str, str]:
        """Sort key: a declared run first, then the values as text."""
        return (
            not self.run,
            self.run,
            self.account,
            self.workload_class.value,
            self.run_source,
            self.run_parent,
        )


NO_LABELS = Labels("", "", WorkloadClass.UNKNOWN, "", "")


@dataclass(frozen=True)
class Attribution:
    job_id: str
    share_ppm: int
    precision: Precision
    source: str
    run: str = ""  # empty: the job is a run of its own (`run_id`)
    account: str = ""  # empty: no account known
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    run_source: str = ""
    run_parent: str = ""  # the run this run derives from, as declared; empty: none

    @property
    def run_id(self) -> str:
        """The run the work belongs to: the declared run, else the job itself."""
        return self.run or self.job_id


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


_Key = tuple[str, Precision, str, Labels]


def settle(windows: Sequence[JobWindow]) -> list[JobWindow]:
    """The windows, each job's with one set of labels: those of its first window in the order
    the module says (declared run, claim, start, labels as text)."""
    first: dict[str, Labels] = {}
    if all(first.setdefault(w.job_id, w.labels) == w.labels for w in windows):
        return list(windows)  # no job's windows disagree: the common case, on every interval
    best: dict[str, tuple[tuple[object, ...], Labels]] = {}
    for w in windows:
        labels = w.labels
        rank = (not labels.run, w.claim, w.start_ns, labels.order())
        held = best.get(w.job_id)
        if held is None or rank < held[0]:
            best[w.job_id] = (rank, labels)
    out = []
    for w in windows:
        chosen = best[w.job_id][1]
        out.append(w if w.labels == chosen else dataclasses.replace(w, **chosen._asdict()))
    return out


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
        keys = {(w.job_id, w.precision, w.source, w.labels) for w in active if w.claim == strongest}
        yield b - a, sorted(keys, key=_order)


def _order(key: _Key) -> tuple[str, str, str, tuple[bool, str, str, str, str, str]]:
    return key[0], key[1].value, key[2], key[3].order()


def attribute(
    start_ns: int,
    end_ns: int,
    processes: Sequence[tuple[int, float]],
    windows: Sequence[JobWindow],
    *,
    gpu_ids: Collection[str] = (),
    unattributed_id: str = UNATTRIBUTED,
    unattributed_account: str = "",
) -> list[Attribution]:
    """Split one GPU's interval among jobs.

    `processes` are (pid, share) with shares summing to ~1; with none, the whole interval is
    work of no known process. `gpu_ids` name the GPU (UUID and MIG instance UUID) that GPU
    claims are matched against. Work no window claims goes to `unattributed_id`, a run of its
    own, with `unattributed_account` (the node's default account; empty: none).
    """
    duration = end_ns - start_ns
    if duration <= 0:
        raise ValueError("interval must have a positive duration")
    windows = settle(windows)
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
    nobody: _Key = (
        unattributed_id,
        Precision.UNSPECIFIED,
        UNATTRIBUTED,
        NO_LABELS._replace(account=unattributed_account),
    )
    for pid, share in work:
        claims = (by_pid.get(pid, []) if pid is not None else []) + gpu_claims
        for length, keys in _pieces(claims, start_ns, end_ns):
            part = share * length / duration
            for key in keys or [nobody]:
                weight[key] = weight.get(key, 0.0) + part / max(len(keys), 1)
    keys = sorted(weight, key=_order)
    ppm = to_ppm([weight[k] for k in keys])
    return [
        Attribution(k[0], p, k[1], k[2], *k[3]) for k, p in zip(keys, ppm, strict=True) if p > 0
    ]
