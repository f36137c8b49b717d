"""What a store returns: small frozen records, so callers never see rows or driver types, and the
sums of a batch.

`aggregate` is the one place per-job sums of a batch are computed: the ingestor uses it to decide
alerts before a commit, a store to write the same sums inside it, so the two cannot disagree.

FLOP figures are Python ints throughout: a job's total passes 2^64 (10^26 FLOPs) and must stay
exact, so a store keeps them in a form that does not round (decimal text in SQLite, NUMERIC in
PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from flopwatch.verify.record import VerifiedRecord
from flopwatch.verify.sums import Sum, merge

NodeStatus = Literal["enrolled", "revoked"]
AlertBasis = Literal["upper", "estimate"]


@dataclass(frozen=True)
class JobTotal:
    """A job's totals over every record accepted so far, across all nodes."""

    job_id: str
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int  # (GPU interval, job) contributions counted
    thresholds_crossed: tuple[int, ...] = ()  # thresholds whose alert has fired, ascending


@dataclass(frozen=True)
class JobGpu:
    """What one GPU, measured under one node key, contributed to one job."""

    job_id: str
    key_id: str
    node_id: str
    gpu_uuid: str
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int


@dataclass(frozen=True)
class NodeRecord:
    """An enrolled (or revoked) node key."""

    key_id: str
    node_id: str
    public_key: bytes  # raw 32-byte Ed25519 public key
    status: NodeStatus
    enrolled_at_ns: int
    revoked_at_ns: int | None = None
    # Collector clock when a batch holding a record of this key was last committed (None: never).
    last_record_ns: int | None = None
    # The latest record of this key answered retry because its time ended this far after the
    # collector's clock (`ClockNote`), and when that was noted (None: never).
    clock_ahead_ns: int | None = None
    clock_ahead_at_ns: int | None = None

    @property
    def clock_ahead(self) -> bool:
        """Whether the node's clock runs ahead now: a record of this key was answered retry
        for its time since the collector last committed one of its records."""
        if self.clock_ahead_at_ns is None:
            return False
        return self.last_record_ns is None or self.clock_ahead_at_ns >= self.last_record_ns


@dataclass(frozen=True)
class ClockNote:
    """A record of `key_id` was answered retry because its time ends `ahead_ns` after the
    collector's clock; noted at `at_ns` (collector clock). `EnrollmentStore.note_clock_ahead`."""

    key_id: str
    ahead_ns: int
    at_ns: int


@dataclass(frozen=True)
class PendingKey:
    """A key that presented itself with a record it signed, but is not enrolled: it waits for an
    operator to approve it by key id (`flopwatch nodes enroll --key-id`)."""

    key_id: str
    node_id: str  # as the key's own signed record claims it
    public_key: bytes  # raw 32-byte Ed25519 public key
    first_seen_ns: int
    last_seen_ns: int


@dataclass(frozen=True)
class GpuTotal:
    """What one device (`gpu_key`) measured under one node key, over every interval held.

    Whole-device figures: per interval, the estimate is the sum of its jobs' estimates and the
    upper bound is the whole GPU's, so a GPU shared by several jobs counts its bound once
    (`JobGpu` sums repeat it in every job, as each job's own bound must).
    """

    key_id: str
    node_id: str
    gpu: str  # gpu_key: the GPU uuid, or uuid/MIG-instance
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int


@dataclass(frozen=True)
class ChainState:
    """How complete one key's chain is: `missing` sequence numbers below `highest` not held."""

    key_id: str
    node_id: str
    held: int
    highest: int

    @property
    def missing(self) -> int:
        return self.highest - self.held


@dataclass(frozen=True)
class Projection:
    """When the next unfired threshold will be crossed at the job's observed average rate."""

    threshold: int
    seconds: float


@dataclass(frozen=True)
class AlertEvent:
    """A job's total crossed a threshold. Fires once per (job, threshold), ever."""

    job_id: str
    threshold: int
    basis: AlertBasis  # which figure crossed it: the sound upper bound or the estimate
    value: int  # that figure's total when the alert fired
    at_ns: int
    projected_next: Projection | None = None


class JobDelta(NamedTuple):
    """Sums of one batch's contributions to one job (a tuple: built per GPU-interval, hot)."""

    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int

    def plus(self, other: JobDelta) -> JobDelta:
        return JobDelta(
            self.flops_estimate + other.flops_estimate,
            self.flops_upper + other.flops_upper,
            min(self.first_start_ns, other.first_start_ns),
            max(self.last_end_ns, other.last_end_ns),
            self.gpu_intervals + other.gpu_intervals,
        )

    def add_to(self, job_id: str, total: JobTotal | None) -> JobTotal:
        """The job's total after this delta is added to `total` (None: a new job)."""
        if total is None:
            return JobTotal(
                job_id,
                self.flops_estimate,
                self.flops_upper,
                self.first_start_ns,
                self.last_end_ns,
                self.gpu_intervals,
            )
        return JobTotal(
            job_id=job_id,
            flops_estimate=total.flops_estimate + self.flops_estimate,
            flops_upper=total.flops_upper + self.flops_upper,
            first_start_ns=min(total.first_start_ns, self.first_start_ns),
            last_end_ns=max(total.last_end_ns, self.last_end_ns),
            gpu_intervals=total.gpu_intervals + self.gpu_intervals,
            thresholds_crossed=total.thresholds_crossed,
        )


# Sums keyed by a tuple, each with the node id of the record that gave it.
NodeSums = dict[tuple[str, ...], tuple[str, JobDelta]]


def aggregate(records: Iterable[VerifiedRecord]) -> dict[str, JobDelta]:
    """Per-job sums of the records' contributions (exact integer arithmetic)."""
    sums = merge((job, s) for r in records for job, s in r.sums.jobs.items())
    return {job: JobDelta(*s) for job, s in sums.items()}


def _node_sums(rows: Iterable[tuple[tuple[str, ...], str, Sum]]) -> NodeSums:
    """Sum (key, node id, sum) rows per key; a key's rows all name one node (keys hold the
    node key)."""
    listed = list(rows)
    nodes = {key: node_id for key, node_id, _ in listed}
    merged = merge((key, s) for key, _, s in listed)
    return {key: (nodes[key], JobDelta(*s)) for key, s in merged.items()}


def job_gpu_sums(records: Iterable[VerifiedRecord]) -> NodeSums:
    """Per (job, node key, GPU) sums of the records' contributions: the rows of job_gpus."""
    return _node_sums(
        ((job, r.key_id, gpu), r.node_id, s)
        for r in records
        for (job, gpu), s in r.sums.job_gpus.items()
    )


def device_sums(records: Iterable[VerifiedRecord]) -> NodeSums:
    """Per (node key, `gpu_key`) whole-device sums of the records' intervals: the rows of
    gpu_totals (the upper bound counted once per interval, however many jobs shared it)."""
    return _node_sums(
        ((r.key_id, device), r.node_id, s) for r in records for device, s in r.sums.devices.items()
    )


def spans_by_device(records: Iterable[VerifiedRecord]) -> dict[str, list[tuple[int, int]]]:
    """Every interval the records measured, [start, end) per device (`gpu_key`)."""
    by_device: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        for device, spans in r.sums.spans.items():
            by_device.setdefault(device, []).extend(spans)
    return by_device


@dataclass(frozen=True)
class LogEntry:
    """One leaf of the transparency log: an accepted record's envelope, as stored."""

    leaf_index: int
    # The leaf data: the exact envelope bytes the store holds; b"" once they were archived
    # and pruned (`RetentionStore`): the leaf hash stays in the log, the bytes are in the archive.
    envelope: bytes
    key_id: str
    sequence: int

    @property
    def archived(self) -> bool:
        return not self.envelope


@dataclass(frozen=True)
class PruneCandidate:
    """A logged record whose envelope an archive holds: its leaf, the leaf hash of the archived
    bytes, and the jobs the record counts for (from its payload)."""

    leaf_index: int
    leaf_hash: bytes
    jobs: frozenset[str]


@dataclass(frozen=True)
class JobEvidence:
    """What the store holds for one job, from one snapshot: what `flopwatch report` bundles."""

    total: JobTotal
    entries: tuple[LogEntry, ...]  # every record that contributed to the job, by leaf index
    nodes: tuple[NodeRecord, ...]  # the keys that signed them, by key id
    revoked_at_log_size: Mapping[str, int]  # log size when each revoked key among them was revoked
    log_size: int  # leaves in the log at the snapshot
