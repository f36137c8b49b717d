"""The collector's store, as narrow interfaces by concern, each implemented by both backends.

  NodeKeyStore     enrolled and revoked node keys
  EnrollmentStore  one-time enrollment tokens, keys awaiting approval, liveness (silence alerts)
  PageStore        paged queries over jobs and their GPUs, runs and accounts
  ChainStore       each key's hash chain and each device's measured time
  TotalsStore      job, run, account, per-GPU and per-device sums, fired alerts, and the one
                   write (`commit`)
  LogStore         the transparency log, job evidence and signed tree heads
  RetentionStore   old envelopes out to an archive: what may go, and dropping their bytes

  NodeTrustStore   NodeKeyStore and EnrollmentStore together (enrollment, liveness)

`Store` combines them: what a collector opens (`flopwatch.collector.store.factory`). Code that
needs one concern takes the narrow interface, so a fake for its tests implements only that.
`flopwatch.collector.store.sqlite.store` (one collector, embedded) and
`flopwatch.collector.store.postgres.store` (several collectors on one database) implement all of
them; the records they return are in `flopwatch.collector.store.records`.

Every method raises `flopwatch.errors.StoreError` on failure. Implementations need not be
thread-safe: the collector calls a store from one thread only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.chain import Neighbours
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.store.common import ChainRows, Span
from flopwatch.collector.store.key_rows import SignKeyStatement
from flopwatch.collector.store.lineage_rows import Check, Declaration
from flopwatch.collector.store.records import (
    AccountTotal,
    AlertEvent,
    ChainState,
    ClockNote,
    GpuTotal,
    JobDelta,
    JobEvidence,
    JobGpu,
    JobTotal,
    LeafScope,
    LogEntry,
    NodeRecord,
    NodeStatus,
    PendingKey,
    PruneCandidate,
    RunEvidence,
    RunTotal,
    ScopeAlert,
    ScopeLeaf,
    WindowTotal,
)
from flopwatch.lineage import Parent, RunKey
from flopwatch.verify.record import VerifiedRecord


class NodeKeyStore(Protocol):
    """Node keys: enrolled by an operator (or a token, or trust on first use), revoked for good."""

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

    def log_key_statements(self, sign: SignKeyStatement) -> None:
        """From now on, log a node key statement signed with `sign` (the collector key) in the
        transaction of every enrollment (here, by a token) and revocation
        (flopwatch.collector.store.key_rows)."""
        ...

    def log_missing_key_statements(self) -> int:
        """Log the statements of keys enrolled or revoked without one (before statements
        existed, or with no key given), in one transaction; return how many. Idempotent.
        StoreError before `log_key_statements`."""
        ...

    def nodes(self) -> list[NodeRecord]: ...

    def node(self, key_id: str) -> NodeRecord | None: ...

    def node_status(self, key_id: str) -> NodeStatus | None: ...

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Public keys of all enrolled (not revoked) nodes, by key id."""
        ...


class EnrollmentStore(Protocol):
    """Enrollment tokens, keys awaiting approval, and which silence of a key was alerted."""

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

    def note_pending_key(self, public_raw: bytes, node_id: str, limits: PendingKeyLimits) -> bool:
        """Remember a key that is not enrolled but presented itself with a record it signed
        for `node_id`, so an operator can approve it by key id; updates its last-seen time
        (store's clock) and claimed node if already noted. Idempotent otherwise.

        Within `limits`, counted over the keys pending now: a key not yet noted is refused
        when `max_total` keys are pending, or `max_new_per_minute` were first seen in the last
        minute; a key is refused when `max_per_node` other keys are pending for `node_id`.
        Returns False, changing nothing, when refused; True when noted."""
        ...

    def remove_pending_keys(self, key_ids: Collection[str]) -> int:
        """Forget keys awaiting approval (an operator rejected them); returns how many were
        pending. Enrolled and revoked keys are not touched. A key that presents itself again
        is noted again, within the limits."""
        ...

    def pending_keys(self) -> list[PendingKey]:
        """Keys noted by `note_pending_key` that are not in the node table (neither enrolled
        nor revoked), by key id."""
        ...

    def note_clock_ahead(self, notes: Collection[ClockNote]) -> None:
        """Keep, per enrolled key, the latest record answered retry because its time ran ahead
        of the collector's clock (`NodeRecord.clock_ahead_ns`, `clock_ahead_at_ns`). A note
        older than the one held is ignored (collectors sharing the store); a key not enrolled
        or revoked is skipped. The key counts as clock-ahead until a batch holding one of its
        records is committed later (`NodeRecord.clock_ahead`)."""
        ...

    def claim_silence_alert(self, key_id: str, since_ns: int) -> bool:
        """Record, atomically, that the silence of `key_id` which began at `since_ns` (its
        last_record_ns, or enrolled_at_ns if it never sent) has been alerted. True if this call
        recorded it; False if that episode was recorded already, by this collector before a
        restart or by another one sharing the store. One alert per silence episode."""
        ...


class PageStore(Protocol):
    """Paged reads for queries over many jobs (the gRPC query service, `flopwatch jobs`)."""

    def job_page(self, prefix: str, after: str, limit: int) -> list[JobTotal]:
        """Up to `limit` jobs whose id starts with `prefix` and sorts after `after` ("" for the
        first page), ascending by job id in code-point (UTF-8 byte, "C" collation) order."""
        ...

    def job_gpu_page(self, job_id: str, after: tuple[str, str], limit: int) -> list[JobGpu]:
        """Up to `limit` of a job's per-GPU sums whose (key_id, gpu_uuid) sorts after `after`
        (("", "") for the first page), ascending by (key_id, gpu_uuid), "C" collation."""
        ...

    def run_page(
        self, account: str | None, prefix: str, after: tuple[str, str], limit: int
    ) -> list[RunTotal]:
        """Up to `limit` runs of `account` ("": runs with no account; None: every account)
        whose name starts with `prefix` and whose (account, run) sorts after `after` (("", "")
        for the first page), ascending by (account, run), "C" collation."""
        ...

    def account_page(self, prefix: str, after: str | None, limit: int) -> list[AccountTotal]:
        """Up to `limit` accounts starting with `prefix` that sort after `after` (None for the
        first page: "", no account known, is an account), ascending, "C" collation, each with
        the number of its runs held."""
        ...

    def account_windows(
        self, accounts: Collection[str], today: int, windows: Sequence[int]
    ) -> dict[str, tuple[WindowTotal, ...]]:
        """For each of `accounts`, its sums over each trailing window (days, in the order
        given) through UTC day `today` (days since 1970-01-01), from the per-day sums held;
        zeros where nothing was measured. Days before the kept bound are no longer held."""
        ...


class ChainStore(Protocol):
    """What the ingestor judges a record against: its key's chain, its devices' measured time."""

    def neighbours(self, key_id: str, sequence: int) -> Neighbours: ...

    def chain_around(self, wanted: Collection[tuple[str, int]]) -> ChainRows:
        """The held records at and next to each (key_id, sequence) of `wanted` (n-1, n, n+1),
        as {key_id: {sequence: (digest, previous_digest)}}: what `neighbours` reads, for a
        whole batch in a few statements."""
        ...

    def held_sequences(self, key_id: str) -> list[int]: ...

    def chain_states(self, key_ids: Collection[str] | None = None) -> list[ChainState]:
        """Held count and highest sequence per key (all keys with records when None)."""
        ...

    def coverage(self, gpu: str, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """Held measured time of one device (`gpu_key`) that may meet [start_ns, end_ns).

        Returns disjoint [start, end) runs, ascending; a superset of the ones that intersect.
        """
        ...

    def coverage_of(self, spans: Collection[Span]) -> dict[Span, list[tuple[int, int]]]:
        """`coverage` of each (gpu, start_ns, end_ns) of `spans`, for a whole batch in a few
        statements."""
        ...

    def measured_by(self, gpu: str, start_ns: int, end_ns: int) -> tuple[str, str] | None:
        """(key_id, node_id) of the key that first measured time of one device (`gpu_key`)
        within [start_ns, end_ns), by the span of its per-device sums (`GpuTotal`): the key
        whose span meets it and starts earliest. None if no key's span meets it (records
        held from before those sums). What an overlap rejection names; not a hot path."""
        ...


class TotalsStore(Protocol):
    """Sums per job, per (job, key, GPU) and per device, fired alerts, and the one write, which
    also adds to the sums per run, per account and per account and UTC day (`PageStore` reads
    those)."""

    def totals_for(self, job_ids: Collection[str]) -> dict[str, JobTotal]: ...

    def job_totals(self, prefix: str = "") -> list[JobTotal]: ...

    def job_gpus(self, job_id: str) -> list[JobGpu]: ...

    def gpu_totals(self, key_ids: Collection[str] | None = None) -> list[GpuTotal]:
        """Per-device sums (all keys when None), sorted by (key_id, gpu)."""
        ...

    def fired_alerts(self) -> list[AlertEvent]: ...

    def runs_for(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], RunTotal]:
        """The totals of the runs held among `keys` ((account, run) pairs)."""
        ...

    def run_recent(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], JobDelta]:
        """Of the runs held among `keys`, each one's sums over its last `RUN_RATE_DAYS` UTC
        days of measurement (`records.RUN_RATE_DAYS`; zeros where none are held): what its
        current rate is measured from."""
        ...

    def record_scope_alerts(self, alerts: Sequence[ScopeAlert]) -> list[ScopeAlert]:
        """Record run and account alerts in one transaction; return those that were new, i.e.
        not already recorded for their `ScopeAlert.key`. Each key is recorded once, ever, also
        among collectors sharing a database."""
        ...

    def fired_scope_alerts(self) -> list[ScopeAlert]:
        """Every run and account alert recorded, in the order they fired."""
        ...

    def commit(
        self, records: Sequence[VerifiedRecord], alerts: Sequence[AlertEvent], received_at_ns: int
    ) -> list[AlertEvent]:
        """Durably apply verified records (chain, totals, per-GPU sums, gaps, coverage) and
        alerts in one transaction; all or nothing. Returns the alerts that were new, i.e. not
        already recorded for their (job, threshold).

        Totals, in the same transaction: per job, per run (account, run), per account, and per
        account and UTC day (`flopwatch.verify.sums.utc_day`) for the days the store keeps
        (the last `AccountWindows.kept_days` by `received_at_ns`; older days held are deleted,
        once a day). GPU time and energy are added per job, run, account and day.

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


class LogStore(Protocol):
    """The transparency log (`flopwatch.collector.log.translog`): leaves, subtree hashes, job
    evidence and signed tree heads."""

    def log_size(self) -> int:
        """Leaves in the transparency log: every record ever committed, in commit order."""
        ...

    def log_nodes(self, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of complete subtrees by (level, index): node (l, i) is the RFC 6962 hash of
        leaves [i * 2^l, (i + 1) * 2^l); level 0 are the leaf hashes. Every node asked for must
        exist (the caller asks only for complete subtrees of the log); StoreError if one does
        not. Nodes are written once by `commit` and never change."""
        ...

    def log_entries(self, start: int, end: int) -> list[bytes]:
        """The data of leaves [start, end): each the stored envelope bytes whose RFC 6962 leaf
        hash is node (0, index). The caller keeps 0 <= start <= end <= log_size() and asks for
        at most a tile's worth (256); StoreError if a leaf in the range is missing."""
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

    def run_evidence(self, account: str, run: str) -> RunEvidence | None:
        """Everything a run report needs, read in ONE consistent snapshot: the run's totals
        and every logged record with a share that counts for the run (account, run), by leaf
        index. None if the store holds no total of the run."""
        ...

    def scope_leaves(
        self, scope: LeafScope, after_leaf: int, below_leaf: int, limit: int
    ) -> list[ScopeLeaf]:
        """One page of the logged records of a job or run (`LeafScope`): leaf index strictly
        between `after_leaf` and `below_leaf`, ascending, at most `limit` of them (and at most
        `common.MAX_LEAF_PAGE`). Pass the last index of a page as the next `after_leaf`. Each
        page is its own read; a scope's leaves below a log size never change, except that
        pruning empties their envelopes (`ScopeLeaf.archived`, for a leaf indexed without its
        figures). Each leaf holds the figures stored at commit for the scope's sum-tree leaf,
        or (indexed before they were stored) its envelope to read them from."""
        ...

    def revoked_at(self, key_ids: Collection[str]) -> dict[str, int]:
        """The log size at the revocation of each of `key_ids` that was revoked."""
        ...

    def add_tree_head(self, tree_size: int, timestamp_ns: int, envelope: bytes) -> None:
        """Keep a signed tree head (a serialized DSSE envelope); one per tree size: a second
        one for a size already held is ignored."""
        ...

    def latest_tree_head(self) -> bytes | None:
        """The signed tree head of the largest size held (envelope bytes), or None."""
        ...

    def add_published_checkpoint(self, origin: str, tree_size: int, note: bytes) -> None:
        """Keep `note`, a checkpoint of `tree_size` that the log of `origin` published (signed
        by the log and cosigned by its witnesses), to serve again after a restart. One per
        origin: a checkpoint smaller than the one held is ignored (collectors sharing a
        database may publish in any order); one of the same size replaces it."""
        ...

    def published_checkpoint(self, origin: str) -> bytes | None:
        """The checkpoint last kept for `origin` (`add_published_checkpoint`), or None."""
        ...


class LineageStore(Protocol):
    """Run lineage declarations (flopwatch.lineage, store/lineage_rows.py)."""

    def add_declaration(self, decl: Declaration, envelope: bytes, check: Check) -> int:
        """In one transaction: call `check` with the parents declared so far and whether the
        store holds a run's totals (it raises LineageError to refuse), keep the declaration and
        append `envelope` (its signed DSSE envelope) to the transparency log. Returns its leaf
        index. Declarations are serialized across writers."""
        ...

    def lineage_parents(self) -> dict[RunKey, Parent]:
        """Every run's declared parent."""
        ...

    def declaration_leaf(self, key: RunKey) -> int | None:
        """The leaf index of the run's lineage declaration, or None if it declared none."""
        ...


class RetentionStore(Protocol):
    """Archiving and pruning old envelopes (`flopwatch.collector.retention`).

    Pruning drops a record's envelope bytes and nothing else: its chain row (sequence, digest,
    previous digest), the log's leaf hash and subtree hashes, its leaf's job index, the totals,
    per-GPU sums, gaps and measured time all stay, so the log's tree heads and proofs, the
    chains and every total are unchanged. `job_evidence` then returns the record's entry with
    empty envelope bytes (`LogEntry.archived`)."""

    def archivable(
        self, before_ns: int, after_leaf: int, below_leaf: int, limit: int
    ) -> list[LogEntry]:
        """Up to `limit` logged records whose envelope is still held, received before
        `before_ns`, at leaves after_leaf < leaf < below_leaf, ascending by leaf. (Whether
        their jobs ended is the caller's to judge, from the payloads and `totals_for`.)"""
        ...

    def prune_envelopes(self, candidates: Sequence[PruneCandidate], before_ns: int) -> list[int]:
        """In one write transaction, drop the envelope bytes of each candidate whose record is
        held with its envelope, whose stored leaf hash equals `leaf_hash` (the archived copy is
        exactly the logged one), and whose every job measured nothing at or after `before_ns`
        (totals' last end earlier). Returns the leaves pruned, ascending; the others are left
        as they are."""
        ...


class NodeTrustStore(NodeKeyStore, EnrollmentStore, Protocol):
    """Node keys with the enrollment around them: what approving, token enrollment and the
    liveness monitor use."""


class Store(
    NodeKeyStore,
    EnrollmentStore,
    PageStore,
    ChainStore,
    TotalsStore,
    LogStore,
    LineageStore,
    RetentionStore,
    Protocol,
):
    """The collector's durable state: every concern, on one database connection."""

    def close(self) -> None: ...
