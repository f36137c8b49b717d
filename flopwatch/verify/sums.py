"""What a verified record adds up to: per job, per (job, GPU) and per measured device. Pure.

The verifier sums a record's figures as it checks them, so that whoever totals many records
(the collector, per batch) adds a few sums per record instead of every GPU interval again.
Integers throughout: sums are exact.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple, TypeVar

# Figures of several GPU intervals added up: FLOPs estimate, FLOPs upper bound, first interval
# start (ns), last interval end (ns), number of (GPU interval, job) contributions.
Sum = tuple[int, int, int, int, int]
K = TypeVar("K", bound=Hashable)


class RecordSums(NamedTuple):
    """One record's figures, summed."""

    jobs: Mapping[str, Sum]  # job id -> its contributions (estimate: its share)
    job_gpus: Mapping[tuple[str, str], Sum]  # (job id, GPU uuid) -> the same, per GPU
    # device (`gpu_key`) -> the whole device's figures, each interval once however many jobs
    # shared it (upper bound: the device's, not the jobs' bounds added)
    devices: Mapping[str, Sum]
    spans: Mapping[str, tuple[tuple[int, int], ...]]  # device -> its intervals [start, end)


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


def _frozen(acc: dict[K, list[int]]) -> dict[K, Sum]:
    return {k: (a[0], a[1], a[2], a[3], a[4]) for k, a in acc.items()}


class SumsBuilder:
    """Adds up a record's intervals as the verifier checks them."""

    def __init__(self) -> None:
        self._job_gpus: dict[tuple[str, str], list[int]] = {}
        self._devices: dict[str, list[int]] = {}
        self._spans: dict[str, list[tuple[int, int]]] = {}

    def add_job(self, job_id: str, uuid: str, figures: Sum) -> None:
        """One job's figures from one interval of GPU `uuid`."""
        _add(self._job_gpus, (job_id, uuid), figures)

    def add_interval(self, device: str, figures: Sum) -> None:
        """One interval's whole-device figures."""
        _add(self._devices, device, figures)
        self._spans.setdefault(device, []).append((figures[2], figures[3]))

    def build(self) -> RecordSums:
        job_gpus = _frozen(self._job_gpus)
        return RecordSums(
            jobs=merge((job, s) for (job, _), s in job_gpus.items()),
            job_gpus=job_gpus,
            devices=_frozen(self._devices),
            spans={d: tuple(s) for d, s in self._spans.items()},
        )


def merge(rows: Iterable[tuple[K, Sum]]) -> dict[K, Sum]:
    """Add up sums per key (many records' sums into a batch's)."""
    acc: dict[K, list[int]] = {}
    for key, s in rows:
        _add(acc, key, s)
    return _frozen(acc)
