"""What the collector keeps, behind one database-agnostic interface.

`Store` is the interface the ingest path and the gRPC layer use; `collector.sqlite_store` is the
embedded implementation (a PostgreSQL one comes later). The small frozen classes here are what a
store returns, so callers never see rows or driver types. `aggregate` is the one place per-job
sums of a batch are computed: the ingestor uses it to decide alerts before a commit, a store to
write the same sums inside it, so the two cannot disagree.

FLOP figures are Python ints throughout: a job's total passes 2^64 (10^26 FLOPs) and must stay
exact, so a store keeps them in a form that does not round (decimal text in SQLite).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.chain import Neighbours
from flopwatch.verify.record import VerifiedRecord

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


@dataclass(frozen=True)
class JobDelta:
    """Sums of one batch's contributions to one job."""

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


def aggregate(records: Iterable[VerifiedRecord]) -> dict[str, JobDelta]:
    """Per-job sums of the records' contributions (exact integer arithmetic)."""
    out: dict[str, JobDelta] = {}
    for r in records:
        for c in r.contributions:
            d = JobDelta(c.flops_estimate, c.flops_upper, c.start_ns, c.end_ns, 1)
            prev = out.get(c.job_id)
            out[c.job_id] = d if prev is None else prev.plus(d)
    return out


def gpu_key(uuid: str, mig_instance: str) -> str:
    """Names one measured device: a whole GPU, or one MIG instance of it.

    MIG instances of one GPU share its uuid and run at the same time, so overlap is judged per
    instance, not per uuid.
    """
    return f"{uuid}/{mig_instance}" if mig_instance else uuid


def device_intervals(record: VerifiedRecord) -> list[tuple[str, int, int]]:
    """(gpu_key, start_ns, end_ns) of every interval the record measured."""
    gpus = record.attestation.gpus
    return [
        (
            gpu_key(gpus[iv.gpu].uuid, gpus[iv.gpu].mig_instance),
            iv.start_unix_ns,
            iv.end_unix_ns,
        )
        for iv in record.attestation.intervals
    ]


class Store(Protocol):
    """The collector's durable state. Every method raises `flopwatch.errors.StoreError` on failure.

    Implementations need not be thread-safe: the collector calls a store from one thread only.
    """

    # -- node keys -------------------------------------------------------------------------
    def enroll(self, public_raw: bytes, node_id: str) -> str:
        """Enroll a raw Ed25519 public key for `node_id`; return its key id. Idempotent.

        Raises KeyFileError for a key that is not 32 bytes, StoreError for a revoked key or
        one enrolled for another node.
        """
        ...

    def revoke(self, key_id: str) -> None:
        """Revoke a key, for good: its records are refused from now on."""
        ...

    def nodes(self) -> list[NodeRecord]: ...

    def node(self, key_id: str) -> NodeRecord | None: ...

    def node_status(self, key_id: str) -> NodeStatus | None: ...

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Public keys of all enrolled (not revoked) nodes, by key id."""
        ...

    # -- chains and coverage ---------------------------------------------------------------
    def neighbours(self, key_id: str, sequence: int) -> Neighbours: ...

    def held_sequences(self, key_id: str) -> list[int]: ...

    def chain_states(self, key_ids: Collection[str] | None = None) -> list[ChainState]:
        """Held count and highest sequence per key (all keys with records when None)."""
        ...

    def coverage(self, gpu: str, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """Held measured time of one device (`gpu_key`) that may meet [start_ns, end_ns).

        Returns disjoint [start, end) runs, ascending; a superset of the ones that intersect.
        """
        ...

    # -- totals and alerts -----------------------------------------------------------------
    def totals_for(self, job_ids: Collection[str]) -> dict[str, JobTotal]: ...

    def job_totals(self, prefix: str = "") -> list[JobTotal]: ...

    def job_gpus(self, job_id: str) -> list[JobGpu]: ...

    def fired_alerts(self) -> list[AlertEvent]: ...

    def commit(
        self, records: Sequence[VerifiedRecord], alerts: Sequence[AlertEvent], received_at_ns: int
    ) -> list[AlertEvent]:
        """Durably apply verified records (chain, totals, per-GPU sums, gaps, coverage) and
        alerts in one transaction; all or nothing. Returns the alerts that were new, i.e. not
        already recorded for their (job, threshold).

        The caller has judged the records (chain, overlap) against this store; the store
        enforces uniqueness of (key, sequence) and (job, threshold) itself.
        """
        ...

    def close(self) -> None: ...
