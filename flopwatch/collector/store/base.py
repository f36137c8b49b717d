"""What the collector keeps, behind one database-agnostic interface.

`Store` is the interface the ingest path and the gRPC layer use;
`flopwatch.collector.store.sqlite.store` is the embedded implementation (a PostgreSQL one comes
later). The small frozen classes here are what a store returns, so callers never see rows or driver
types. `aggregate` is the one place per-job sums of a batch are computed: the ingestor uses it to
decide alerts before a commit, a store to write the same sums inside it, so the two cannot disagree.

FLOP figures are Python ints throughout: a job's total passes 2^64 (10^26 FLOPs) and must stay
exact, so a store keeps them in a form that does not round (decimal text in SQLite).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.chain import Neighbours
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
    envelope: bytes  # the leaf data: the exact envelope bytes the store holds
    key_id: str
    sequence: int


@dataclass(frozen=True)
class JobEvidence:
    """What the store holds for one job, from one snapshot: what `flopwatch report` bundles."""

    total: JobTotal
    entries: tuple[LogEntry, ...]  # every record that contributed to the job, by leaf index
    nodes: tuple[NodeRecord, ...]  # the keys that signed them, by key id
    revoked_at_log_size: Mapping[str, int]  # log size when each revoked key among them was revoked
    log_size: int  # leaves in the log at the snapshot


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
        """Revoke a key, for good: its records are refused from now on.

        In the same transaction, records the transparency log's size at the revocation
        (`JobEvidence.revoked_at_log_size`): no leaf from that index on may hold a record of
        this key, and an offline verifier fails one that does.
        """
        ...

    def nodes(self) -> list[NodeRecord]: ...

    def node(self, key_id: str) -> NodeRecord | None: ...

    def node_status(self, key_id: str) -> NodeStatus | None: ...

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Public keys of all enrolled (not revoked) nodes, by key id."""
        ...

    # -- enrollment tokens, keys awaiting approval, liveness --------------------------------
    def add_enroll_token(self, token_hash: str, node_id: str, expires_at_ns: int) -> None:
        """Keep a one-time enrollment token for `node_id`, by its hash only (hex SHA-256 of the
        token text; the token itself is never stored). Raises StoreError if the hash exists."""
        ...

    def redeem_enroll_token(self, token_hash: str, public_raw: bytes) -> str:
        """Spend a token to enroll a key, in one transaction; return the key id.

        The token must be known, unused and unexpired (expires_at_ns > the store's clock). The
        key is enrolled for the token's node as `enroll` does, and the token is marked spent by
        this key, for good. A key already enrolled for that node returns its id and spends
        nothing. Raises EnrollmentError, with nothing changed, for an unknown, spent or expired
        token or a key that is revoked or enrolled for another node; KeyFileError for a key
        that is not 32 bytes.
        """
        ...

    def note_pending_key(self, public_raw: bytes, node_id: str) -> None:
        """Remember a key that is not enrolled but presented itself with a record it signed
        for `node_id`, so an operator can approve it by key id; updates its last-seen time
        (store's clock) and claimed node if already noted. Idempotent otherwise."""
        ...

    def pending_keys(self) -> list[PendingKey]:
        """Keys noted by `note_pending_key` that are not in the node table (neither enrolled
        nor revoked), by key id."""
        ...

    def claim_silence_alert(self, key_id: str, since_ns: int) -> bool:
        """Record, atomically, that the silence of `key_id` which began at `since_ns` (its
        last_record_ns, or enrolled_at_ns if it never sent) has been alerted. True if this call
        recorded it; False if that episode was recorded already, by this collector before a
        restart or by another one sharing the store. One alert per silence episode."""
        ...

    def gpu_totals(self, key_ids: Collection[str] | None = None) -> list[GpuTotal]:
        """Per-device sums (all keys when None), sorted by (key_id, gpu)."""
        ...

    # -- paged queries ----------------------------------------------------------------------
    def job_page(self, prefix: str, after: str, limit: int) -> list[JobTotal]:
        """Up to `limit` jobs whose id starts with `prefix` and sorts after `after` ("" for the
        first page), ascending by job id in code-point (UTF-8 byte, "C" collation) order."""
        ...

    def job_gpu_page(self, job_id: str, after: tuple[str, str], limit: int) -> list[JobGpu]:
        """Up to `limit` of a job's per-GPU sums whose (key_id, gpu_uuid) sorts after `after`
        (("", "") for the first page), ascending by (key_id, gpu_uuid), "C" collation."""
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
        enforces uniqueness of (key, sequence) and (job, threshold) itself. A store several
        collectors share judges the records again inside the transaction and raises
        StoreConflictError, applying nothing, if another writer committed a conflicting one.

        Transparency log, in the same transaction: each record's stored envelope bytes (the exact
        bytes `LogEntry.envelope` returns) become the next leaf, in the order given, and the leaf is
        indexed under every job the record contributes to (`job_evidence`). The nodes to write come
        from `flopwatch.collector.log.translog.append` given `log_nodes(edge(size))`; appends must
        be serialized across writers (leaf indices are dense and never reused).
        """
        ...

    # -- transparency log (flopwatch.collector.log.translog) ---------------------------------------
    def log_size(self) -> int:
        """Leaves in the transparency log: every record ever committed, in commit order."""
        ...

    def log_nodes(self, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of complete subtrees by (level, index): node (l, i) is the RFC 6962 hash of
        leaves [i * 2^l, (i + 1) * 2^l); level 0 are the leaf hashes. Every node asked for must
        exist (the caller asks only for complete subtrees of the log); StoreError if one does
        not. Nodes are written once by `commit` and never change."""
        ...

    def log_leaf_index(self, key_id: str, sequence: int) -> int | None:
        """Index of the leaf holding the record (key_id, sequence), or None if not held. (Not
        by leaf hash: an index on hashes takes random writes, and the commit must not slow down
        as the log grows.)"""
        ...

    def job_evidence(self, job_id: str) -> JobEvidence | None:
        """Everything a job report needs, read in ONE consistent snapshot (a read transaction),
        so the totals are exactly the sum of the entries. None if no record of the job is held.
        """
        ...

    def add_tree_head(self, tree_size: int, timestamp_ns: int, envelope: bytes) -> None:
        """Keep a signed tree head (a serialized DSSE envelope); one per tree size: a second
        one for a size already held is ignored."""
        ...

    def latest_tree_head(self) -> bytes | None:
        """The signed tree head of the largest size held (envelope bytes), or None."""
        ...

    def close(self) -> None: ...
