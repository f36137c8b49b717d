"""What a verified record adds up to: per job, per (job, GPU), per measured device, per run, per
run and UTC day, and per account and UTC day. Pure.

The verifier sums a record's figures as it checks them, so that whoever totals many records
(the collector, per batch) adds a few sums per record instead of every GPU interval again.
Integers throughout: sums are exact.

GPU time and energy are attributed by the same shares as FLOPs (a job's `share_ppm` of each
interval), and kept exact in units of the share: GPU time in femtoseconds (the interval's
nanoseconds times the share in ppm) and energy in nanojoules (the interval's GPU board energy in
millijoules times the share in ppm), so the jobs of one interval add up to the whole GPU's.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple, TypeVar

from flopwatch.runs import run_of

# Figures of several GPU intervals added up: FLOPs estimate, FLOPs upper bound, first interval
# start (ns), last interval end (ns), number of (GPU interval, job) contributions, GPU time
# (femtoseconds) and GPU board energy (nanojoules).
Sum = tuple[int, int, int, int, int, int, int]
K = TypeVar("K", bound=Hashable)

DAY_NS = 86400 * 10**9


def utc_day(end_ns: int) -> int:
    """The UTC day (days since 1970-01-01) an interval ending at `end_ns` counts for: the day of
    its last nanosecond, so an interval ending exactly at midnight stays in the day it ran. An
    interval crossing midnight counts whole for the day it ends in (intervals are at most an
    hour: `Limits.max_interval_ns`)."""
    return (end_ns - 1) // DAY_NS


class RecordSums(NamedTuple):
    """One record's figures, summed."""

    jobs: Mapping[str, Sum]  # job id -> its contributions (estimate: its share)
    job_gpus: Mapping[tuple[str, str], Sum]  # (job id, GPU uuid) -> the same, per GPU
    # device (`gpu_key`) -> the whole device's figures, each interval once however many jobs
    # shared it (upper bound: the device's, not the jobs' bounds added)
    devices: Mapping[str, Sum]
    spans: Mapping[str, tuple[tuple[int, int], ...]]  # device -> its intervals [start, end)
    # (account, run) -> its jobs' contributions; the run is the declared one, else the job id
    # (`flopwatch.runs.run_of`); account "" where none is known
    runs: Mapping[tuple[str, str], Sum]
    run_classes: Mapping[tuple[str, str], int]  # (account, run) -> classes (`runs.CLASS_BIT` set)
    account_days: Mapping[tuple[str, int], Sum]  # (account, `utc_day`) -> contributions
    # (account, run, `utc_day`) -> contributions: a run's recent rate (forecasts)
    run_days: Mapping[tuple[str, str, int], Sum]
    # (account, run) -> the parent run the record's workload declared for it (a run name of the
    # same account; the smallest as text where one record names two); only runs naming one
    run_parents: Mapping[tuple[str, str], str] = {}
    # The figures a sampled report's sum-tree leaf states that the sums above do not hold
    # (`flopwatch.verify.sampled_format.job_sums`, `run_sums`): per job, the GPU-nanoseconds
    # of each interval it has a share of (whole intervals, not by share); per (account, run),
    # of each interval any of its shares is in, each interval once. And the record's FLOP model
    # version. Empty where a record's sums were made without them: its leaf figures are then
    # read from its envelope.
    job_ns: Mapping[str, int] = {}
    run_ns: Mapping[tuple[str, str], int] = {}
    flop_model_version: str = ""


def _add(acc: dict[K, list[int]], key: K, s: Sum) -> None:
    a = acc.get(key)
    if a is None:
        acc[key] = list(s)
        return
    a[0] += s[0]
    a[1] += s[1]
    a[2] = min(a[2], s[2])
    a[3] = max(a[3], s[3])
    a[4] += s[4]
    a[5] += s[5]
    a[6] += s[6]


def _frozen(acc: dict[K, list[int]]) -> dict[K, Sum]:
    return {k: (a[0], a[1], a[2], a[3], a[4], a[5], a[6]) for k, a in acc.items()}


# A job's contribution as the builder keys it: (job id, GPU uuid, declared run, account,
# class bit, UTC day).
_Labelled = tuple[str, str, str, str, int, int]


class SumsBuilder:
    """Adds up a record's intervals as the verifier checks them."""

    def __init__(self) -> None:
        # Each job's figures per interval added up (a `Sum`, then in slot 7 the intervals'
        # whole GPU-ns: a sum-tree leaf's), keyed (job id, GPU uuid, declared run (empty:
        # none), account, class bit, `utc_day` of the interval); the record verifier adds to
        # it directly (`flopwatch.verify.record._add_jobs`: once per job per interval)
        self.labelled: dict[_Labelled, list[int]] = {}
        self._devices: dict[str, list[int]] = {}
        self._spans: dict[str, list[tuple[int, int]]] = {}
        self._parents: dict[tuple[str, str], str] = {}
        # (account, run) -> GPU-ns its shares' whole intervals count more than once (several
        # shares of the run in one interval), to take off the sum of its jobs' intervals
        self._run_excess: dict[tuple[str, str], int] = {}

    def add_shared_interval(self, labels: Iterable[tuple[str, str, str, int]], ns: int) -> None:
        """An interval of `ns` GPU-ns that several shares are in, each labelled (job id,
        declared run, account, class bit): a run with k of them counts it once, not k times."""
        seen = set()
        for job, run, account, _ in labels:
            key = (account, run_of(job, run))
            if key in seen:
                self._run_excess[key] = self._run_excess.get(key, 0) + ns
            seen.add(key)

    def add_parent(self, run: tuple[str, str], parent: str) -> None:
        """A parent run the record declares for (account, run)."""
        held = self._parents.get(run)
        if held is None or parent < held:
            self._parents[run] = parent

    def add_interval(self, device: str, figures: Sum) -> None:
        """One interval's whole-device figures."""
        _add(self._devices, device, figures)
        self._spans.setdefault(device, []).append((figures[2], figures[3]))

    def build(self, flop_model_version: str = "") -> RecordSums:
        """The record's sums; `flop_model_version`: its payload's (empty: not known)."""
        labelled = _frozen(self.labelled)
        job_ns: dict[str, int] = {}
        run_ns: dict[tuple[str, str], int] = {}
        for (job, _, declared, account, _, _), a in self.labelled.items():
            job_ns[job] = job_ns.get(job, 0) + a[7]
            scope = (account, run_of(job, declared))
            run_ns[scope] = run_ns.get(scope, 0) + a[7]
        for scope, excess in self._run_excess.items():
            run_ns[scope] -= excess
        job_gpus = merge(((job, uuid), s) for (job, uuid, *_), s in labelled.items())
        classes: dict[tuple[str, str], int] = {}
        by_run_day: list[tuple[tuple[str, str, int], Sum]] = []
        for (job, _, run, account, bit, day), s in labelled.items():
            key = (account, run_of(job, run))
            by_run_day.append(((*key, day), s))
            classes[key] = classes.get(key, 0) | bit
        run_days = merge(by_run_day)
        return RecordSums(
            jobs=merge((job, s) for (job, _), s in job_gpus.items()),
            job_gpus=job_gpus,
            devices=_frozen(self._devices),
            spans={d: tuple(s) for d, s in self._spans.items()},
            runs=merge(((account, run), s) for (account, run, _), s in run_days.items()),
            run_classes=classes,
            account_days=merge(((k[3], k[5]), s) for k, s in labelled.items()),
            run_days=run_days,
            run_parents=self._parents,
            job_ns=job_ns,
            run_ns=run_ns,
            flop_model_version=flop_model_version,
        )


def merge(rows: Iterable[tuple[K, Sum]]) -> dict[K, Sum]:
    """Add up sums per key (many records' sums into a batch's)."""
    acc: dict[K, list[int]] = {}
    for key, s in rows:
        _add(acc, key, s)
    return _frozen(acc)
