"""The ingest path: envelopes in, acks out, after one durable commit per batch.

Per envelope, in order:
  1. Parse the DSSE envelope (bounded by `Limits`).
  2. Find a signing key: enrolled -> trusted; revoked -> "revoked_key"; unknown -> "unknown_key",
     unless trust on first use is on and the agent presented the matching public key.
  3. Verify the record (`RecordVerifier`): signature, contents, figures. A record a verify
     worker already verified against the key its stream presented
     (`flopwatch.collector.ingest.workers`) is taken as verified only when that key is the one key
     trusted in step 2.
  4. Judge it against its key's chain, as held in the store plus what this batch accepted:
     the same record again -> duplicate (nothing changes); a conflicting one -> "chain_fork".
  5. Refuse a record whose node id is not the one its key is enrolled for ("node_mismatch").
  6. Refuse intervals that overlap time already measured on the same device ("overlap"), so no
     GPU-second is counted twice, even by two keys. Overlap is judged against the exact set of
     measured time (`Store.coverage`), not only the latest end per GPU, so records that arrive
     out of order, or fill the hole a gap left, are accepted when they do not overlap.
Then per batch: decide alerts from the new totals, commit records, totals and alerts in ONE
transaction, and only then return the acks and hand new alerts to the sinks. If the store fails,
every envelope of the batch is acked "retry" and nothing of the batch is applied. Run and account
alerts (`flopwatch.collector.alerts.scopes`) are decided after the commit, from the totals of the
batch's runs and accounts read back (a run's cumulative, with its ancestors' through
`flopwatch.collector.lineage.parent_compute`), and recorded once each
(`Store.record_scope_alerts`). Before them, the parent runs the batch's records name for runs
without a lineage are declared (`flopwatch.collector.ingest.declared_parents`), so a run
declared derived has its run alerts (the derived-run rule among them) decided at once.

Collectors sharing one database: another collector may commit a record of this batch (or
overlapping GPU time) between the judging and the commit. The store then applies nothing and
raises StoreConflictError, and the batch is judged again against what it now holds (up to
`MAX_COMMIT_ATTEMPTS` times), so such records are acked duplicate or rejected, never counted
twice. Alerts two concurrent commits cross together are found from the totals read after the
commit (`_crossed_meanwhile`).

Trust on first use enrolls a key (its own transaction) once a record signed by it verifies and
judges sound; if the batch's commit then fails, the key stays enrolled and the records come back.
A key that is not enrolled but was presented by the agent is noted as awaiting approval (within
the bounds of `PendingKeyLimits`; a key past them is not noted), and its
records that verify under it are answered RETRY (reason "unknown_key"), not REJECTED: the agent
keeps them and sends them again, so a node's work before an operator approves it is not lost.
An envelope from an unknown key nobody presented is REJECTED. An enrollment token is redeemed
before a stream's first record (`flopwatch.collector.enrollment`).

A chain fork is refused, logged, counted and alerted (`flopwatch.collector.alerts.forks`).

Time: a record whose time ends later than the collector's clock plus the allowed skew is answered
RETRY (reason "future"), not refused: it passed every other check, and its time may yet come (a
node whose clock runs ahead). The agent keeps it and sends it again; the collector counts such
records per node, alerts once per episode and notes the node's clock in the store, where
`nodes list` shows it (`flopwatch.collector.alerts.clocks`). A record
holding time older than `Limits.max_record_age_ns` is REJECTED ("too_old").

Threads: an Ingestor and its store are used from one thread (the collector's ingest thread).
Only `snapshot()` may be called from others (the metrics scrape); it reads a copy kept under a
lock, never the store. The counters are in memory and start at zero on restart, as Prometheus
counters do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.attestation import parse_payload
from flopwatch.chain import Verdict, judge
from flopwatch.collector.alerts.clocks import ClockTracker
from flopwatch.collector.alerts.events import AlertSink, Event, ThresholdPolicy, notify
from flopwatch.collector.alerts.forks import ForkTracker
from flopwatch.collector.alerts.scopes import ScopedPolicy
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.enrollment import Presented, TokenRedeemer
from flopwatch.collector.ingest.batch import PendingBatch
from flopwatch.collector.ingest.declared_parents import WorkloadParents
from flopwatch.collector.ingest.rejections import Rejections
from flopwatch.collector.ingest.run_view import AccountView, RunView
from flopwatch.collector.lineage import parent_compute
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import (
    AlertEvent,
    ChainState,
    GpuTotal,
    JobTotal,
    NodeRecord,
    RunTotal,
    ScopeAlert,
    WindowTotal,
    aggregate,
)
from flopwatch.dsse import Envelope
from flopwatch.errors import (
    KeyFileError,
    StoreConflictError,
    StoreError,
    VerificationError,
)
from flopwatch.keys import key_id_of_raw, public_from_raw, short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.verify.record import RecordVerifier, VerifiedRecord
from flopwatch.verify.sums import utc_day

log = logging.getLogger(__name__)

AckStatus = Literal["accepted", "duplicate", "rejected", "retry"]
# Stores keep sequence numbers as signed 64-bit integers and look one past them.
MAX_SEQUENCE = 2**63 - 2
_ID_CHARS = 64  # a key id is 64 hex characters
# Judge-and-commit rounds per batch when collectors sharing the database commit conflicting
# records meanwhile (StoreConflictError); after the last, the batch is acked "retry".
MAX_COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class Ack:
    """The collector's answer for one envelope. key_id and sequence are as the payload claims
    them (empty / 0 when the envelope could not be read)."""

    key_id: str
    sequence: int
    status: AckStatus
    reason: str = ""  # machine-readable, for "rejected" and "retry"
    detail: str = ""


@dataclass(frozen=True)
class IngestSnapshot:
    """What the metrics endpoint shows; a copy, safe to read from any thread."""

    jobs: tuple[JobTotal, ...]
    chains: tuple[ChainState, ...]
    accepted: int
    duplicate: int
    retry: int
    rejected: Mapping[str, int]
    gpus: tuple[GpuTotal, ...] = ()  # whole-device sums per (key, GPU)
    runs: tuple[RunTotal, ...] = ()
    accounts: tuple[AccountView, ...] = ()  # with trailing windows as of their last commit
    forks: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (key_id, node) -> n
    verified_ahead: int = 0  # records a verify worker verified, taken as they were
    # (key_id, node) -> records answered retry because their time is ahead of the clock, and
    # how far ahead (seconds) the latest was, for keys still ahead.
    future: Mapping[tuple[str, str], int] = field(default_factory=dict)
    clock_ahead: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # (scope, kind, rule, threshold) -> run and account alerts recorded in the store
    scope_alerts: Mapping[tuple[str, str, str, int], int] = field(default_factory=dict)
    # Runs declared derived from the parent their records name, and those refused by reason
    # (`flopwatch.collector.ingest.declared_parents.REASONS`).
    lineage_declared: int = 0
    lineage_refused: Mapping[str, int] = field(default_factory=dict)


class _View(NamedTuple):
    """The totals read back after a commit for the metrics view (`Ingestor._refresh_view`),
    which the commit's alerts are decided from too."""

    jobs: dict[str, JobTotal]
    runs: dict[tuple[str, str], RunTotal]
    accounts: dict[str, AccountView]


@dataclass(frozen=True)
class _Claim:
    """An envelope as received, before verification."""

    key_id: str
    sequence: int
    envelope: Envelope | None
    error: VerificationError | None = None
    peer: str = ""

    def ack(self, status: AckStatus, reason: str = "", detail: str = "") -> Ack:
        return Ack(self.key_id, self.sequence, status, reason, detail)


class Submission(NamedTuple):
    """One envelope as its stream handed it in."""

    envelope: bytes
    presented_key: bytes | None = None  # the raw public key the stream presented, if any
    # The record, verified in advance against the presented key
    # (`flopwatch.collector.ingest.workers`).
    verified: VerifiedRecord | None = None
    # Who sent it (`flopwatch.collector.rpc.admission.Peer.key`), for the rejection log.
    peer: str = ""


def _awaiting(presented: bytes, noted: Presented) -> str:
    """The detail of a "retry" ack for a record of a key that awaits approval."""
    key = short_key_id(key_id_of_raw(presented))
    if noted is Presented.FULL:
        return (
            f"key {key} is not enrolled, and keys awaiting approval are at their limit; "
            "enroll it with a token or ask the operator to make room; send this record again later"
        )
    return f"key {key} awaits approval (flopwatch nodes enroll); send this record again later"


class Ingestor:
    """Verifies, deduplicates and commits batches of envelopes; see the module docstring."""

    def __init__(
        self,
        store: Store,
        policy: ThresholdPolicy,
        sinks: Sequence[AlertSink],
        *,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        enroll_on_first_use: bool = False,
        pending_keys: PendingKeyLimits | None = None,
        rejections: Rejections | None = None,
        max_label_values: int = 1000,
        scoped: ScopedPolicy | None = None,
        account_windows: Sequence[int] = (30, 90, 365),
        parents: WorkloadParents | None = None,
    ) -> None:
        self._store = store
        # Declares the parent runs records name (None: such parents are not declared).
        self.parents = parents
        # Thresholds per run and per account window (flopwatch.collector.alerts.scopes).
        self.scoped = scoped or ScopedPolicy()
        self._account_windows = tuple(account_windows)
        fired = store.fired_scope_alerts() if self.scoped.active else []
        self._fired_scope = {a.key for a in fired}
        self._scope_counts: dict[tuple[str, str, str, int], int] = {}
        for a in fired:
            key = (a.scope, a.kind, a.rule.name, a.rule.threshold)
            self._scope_counts[key] = self._scope_counts.get(key, 0) + 1
        # Rejected records are counted and logged there, one line per peer per period.
        self.rejections = rejections or Rejections()
        self.policy = policy
        self._sinks = tuple(sinks)
        self._limits = limits
        self._now_ns = now_ns
        self._tofu = enroll_on_first_use
        self._public: dict[str, Ed25519PublicKey] = {}
        self._lock = threading.Lock()  # guards the fields below, which snapshot() copies
        self._jobs = {t.job_id: t for t in store.job_totals()}
        self._chains = {c.key_id: c for c in store.chain_states()}
        self._gpus = {(g.key_id, g.gpu): g for g in store.gpu_totals()}
        self._runs = RunView(store, account_windows)  # run and account totals, for metrics
        self._runs.load()
        self._accepted = self._duplicate = self._retry = 0
        self._verified_ahead = 0
        self._ahead_in_batch = 0  # of the batch being judged
        self._rejected: dict[str, int] = {}
        self._forks = ForkTracker()
        self._clocks = ClockTracker(limits.max_clock_skew_ns)
        self.enrollment = TokenRedeemer(
            store, limits=limits, pending=pending_keys, max_label_values=max_label_values
        )
        if enroll_on_first_use:
            log.warning("trust on first use is on: any node key that presents itself is enrolled")

    # -- public API ------------------------------------------------------------------------
    def ingest(self, envelopes: Sequence[bytes], presented_key: bytes | None = None) -> list[Ack]:
        """Ack every envelope, in order, after committing it (batches of max_commit_batch).

        `presented_key` is the raw public key the sending agent presented (for trust on first
        use and for noting a key that awaits approval).
        """
        return self.ingest_from([Submission(data, presented_key) for data in envelopes])

    def ingest_from(self, items: Sequence[Submission]) -> list[Ack]:
        """`ingest` for envelopes of several streams: each with its own stream's presented key
        and, where a verify worker verified it, its record."""
        acks: list[Ack] = []
        step = self._limits.max_commit_batch
        for i in range(0, len(items), step):
            acks += self._ingest_batch(items[i : i + step])
        return acks

    def job_totals(self, prefix: str = "") -> list[JobTotal]:
        return self._store.job_totals(prefix)

    def enroll_with_token(self, token: str, presented: bytes) -> str:
        """Redeem an enrollment token for the presented key (see `TokenRedeemer.redeem`)."""
        return self.enrollment.redeem(token, presented)

    def snapshot(self) -> IngestSnapshot:
        declared, refused = self.parents.counts() if self.parents is not None else (0, {})
        with self._lock:
            return IngestSnapshot(
                jobs=tuple(self._jobs.values()),
                chains=tuple(self._chains.values()),
                accepted=self._accepted,
                duplicate=self._duplicate,
                retry=self._retry,
                verified_ahead=self._verified_ahead,
                rejected=dict(self._rejected),
                gpus=tuple(self._gpus.values()),
                runs=tuple(self._runs.runs.values()),
                accounts=tuple(self._runs.accounts.values()),
                forks=self._forks.counts(),
                future=self._clocks.counts(),
                clock_ahead=self._clocks.ahead(),
                scope_alerts=dict(self._scope_counts),
                lineage_declared=declared,
                lineage_refused=refused,
            )

    # -- one batch -------------------------------------------------------------------------
    def _ingest_batch(self, items: Sequence[Submission]) -> list[Ack]:
        claims = [self._claim(s) for s in items]
        self._forks.start_batch()
        self._clocks.start_batch()
        try:
            acks, batch, fired = self._judge_and_commit(claims, items)
        except StoreError as e:
            log.error("store failed, %d envelopes acked retry: %s", len(claims), e)
            acks = [c.ack("retry", "store_unavailable", str(e)) for c in claims]
            self._count(acks)
            return acks
        self._count(acks)
        self._note_rejections(claims, acks, batch)
        with self._lock:
            self._verified_ahead += self._ahead_in_batch
        view = self._refresh_view(batch.records)
        now = self._now_ns()
        forks = self._forks.settle(now)
        clocks = self._clocks.settle({r.key_id for r in batch.records}, now)
        self._note_clocks()
        declared = self.parents.after_commit(batch.records) if self.parents is not None else []
        scoped = self._scope_alerts(batch.records, declared, view)
        totals = {} if view is None else view.jobs
        self._emit([*fired, *self._crossed_meanwhile(totals), *scoped, *forks, *clocks])
        return acks

    def check_lineage(self) -> None:
        """Decide now the run alerts of the runs declared derived since the last look by others
        (the operator's `flopwatch runs declare`, another collector), rather than at their next
        commit. The collector calls it every `lineage_check_s`."""
        if self.parents is None:
            return
        new = self.parents.refresh()
        if new:
            self._emit(self._scope_alerts((), new))

    def _scope_alerts(
        self,
        records: Sequence[VerifiedRecord],
        declared: Sequence[tuple[str, str]] = (),
        view: _View | None = None,
    ) -> list[ScopeAlert]:
        """Record and return the run and account alerts the committed totals of the batch's
        runs and accounts (and of the runs just `declared` derived) newly call for.

        Decided after the commit, from totals read back, so concurrent collectors both see
        what they added together; the store records each alert once and hands back only the
        new ones. A store failure here delays the alerts to the next commit to the same run
        or account (they are decided from the totals, not from what the batch added). The
        totals and windows the metrics `view` read after this commit are used, not read
        twice; the lineage is the one `parents` keeps, refreshed every `lineage_check_s`."""
        policy = self.scoped
        if not (records or declared) or not policy.active:
            return []
        now = self._now_ns()
        keys = {key for r in records for key in r.sums.runs}
        keys.update(declared)
        proposed: list[ScopeAlert] = []
        try:
            if policy.run_rules:
                lineage = None if self.parents is None else self.parents.lineage
                parent_of = parent_compute(self._store, lineage)  # own plus ancestors'
                # Forecasts: each run's current rate, from its last days of measurement.
                recent = self._store.run_recent(keys) if policy.forecast_days > 0 else {}
                held_runs = {} if view is None else view.runs
                missing = keys - held_runs.keys()
                runs = {**held_runs, **(self._store.runs_for(missing) if missing else {})}
                for key in sorted(keys & runs.keys()):
                    proposed += policy.run_alerts(runs[key], now, parent_of, recent.get(key))
            if policy.account_rules:
                for account, windows in self._windows_of({a for a, _ in keys}, view, now):
                    sums = [(w.days, w.flops_estimate, w.flops_upper) for w in windows]
                    proposed += policy.account_alerts(account, sums, now)
            proposed = [a for a in proposed if a.key not in self._fired_scope]
            new = self._store.record_scope_alerts(proposed)
        except StoreError as e:
            log.error("cannot decide run and account alerts after a commit: %s", e)
            return []
        # Those another collector recorded first are known fired too: not proposed again.
        self._fired_scope.update(a.key for a in proposed)
        self._count_scope_alerts(new)
        return new

    def _windows_of(
        self, accounts: set[str], view: _View | None, now: int
    ) -> Iterable[tuple[str, Sequence[WindowTotal]]]:
        """Each account's trailing windows: as the metrics view read them after this commit,
        else read now."""
        held = {} if view is None else view.accounts
        if view is not None and accounts <= held.keys():
            return [(a, held[a].windows) for a in sorted(accounts)]
        return self._store.account_windows(accounts, utc_day(now), self._account_windows).items()

    def _count_scope_alerts(self, alerts: Sequence[ScopeAlert]) -> None:
        with self._lock:
            for a in alerts:
                key = (a.scope, a.kind, a.rule.name, a.rule.threshold)
                self._scope_counts[key] = self._scope_counts.get(key, 0) + 1

    def _note_clocks(self) -> None:
        """Keep the clocks found ahead in the store, for `nodes list`; a failure only delays
        that (the next settle hands the notes out again)."""
        notes = self._clocks.notes()
        if not notes:
            return
        try:
            self._store.note_clock_ahead(notes)
        except StoreError as e:
            log.error("cannot note %d node clock(s) running ahead: %s", len(notes), e)
            self._clocks.unnoted(notes)

    def _judge_and_commit(
        self, claims: Sequence[_Claim], items: Sequence[Submission]
    ) -> tuple[list[Ack], PendingBatch, list[AlertEvent]]:
        """Judge the claims, commit what was accepted; return acks, batch and new alerts.

        StoreConflictError: another collector sharing the database committed some of these
        records (or overlapping GPU time) after they were judged, and nothing was applied; judge
        them again against what the store holds now, so they come back duplicate or rejected.
        """
        attempt = 1
        while True:
            batch = PendingBatch(self._store)
            batch.prefetch([s.verified for s in items if s.verified is not None])
            self._ahead_in_batch = 0
            acks = [
                self._judge(c, batch, s.presented_key, s.verified)
                for c, s in zip(claims, items, strict=True)
            ]
            try:
                return acks, batch, self._commit(batch)
            except StoreConflictError as e:
                if attempt >= MAX_COMMIT_ATTEMPTS:
                    raise
                attempt += 1
                log.info("commit met records another collector committed; judging again: %s", e)

    def _claim(self, item: Submission) -> _Claim:
        if item.verified is not None:  # parsed already
            r = item.verified
            return _Claim(r.key_id[:_ID_CHARS], r.sequence, r.envelope, peer=item.peer)
        try:
            env = Envelope.from_bytes(item.envelope, self._limits)
        except VerificationError as e:
            return _Claim("", 0, None, e, peer=item.peer)
        try:
            att = parse_payload(env.payload, self._limits)
        except VerificationError:  # the verifier reports it with its reason
            return _Claim(env.signatures[0][0][:_ID_CHARS], 0, env, peer=item.peer)
        # Unverified: echoed in the ack, so cut to size.
        return _Claim(att.key_id[:_ID_CHARS], att.sequence, env, peer=item.peer)

    def _judge(
        self,
        claim: _Claim,
        batch: PendingBatch,
        presented: bytes | None,
        verified: VerifiedRecord | None,
    ) -> Ack:
        if claim.envelope is None or claim.error is not None:
            err = claim.error or VerificationError("malformed", "unreadable envelope")
            return self._reject(claim, err.reason, err.message)
        trusted: dict[str, Ed25519PublicKey] = {}
        try:
            trusted, first_use = self._trusted(claim.envelope, batch, presented)
            if verified is not None and trusted.keys() == {verified.key_id}:
                record = verified  # verified with the very key trusted now
                self._ahead_in_batch += 1
            else:
                verifier = RecordVerifier(
                    trusted_keys=trusted, limits=self._limits, now_ns=self._now_ns
                )
                record = verifier.verify(claim.envelope)
        except VerificationError as e:
            if e.reason == "future" and trusted:
                return self._not_yet(claim, claim.envelope, next(iter(trusted)), batch, e)
            if e.reason == "unknown_key" and presented is not None:
                noted = self.enrollment.note_unknown(claim.envelope, presented)
                if noted is not Presented.UNSOUND:
                    # Sound but for approval: the agent keeps the record and sends it again,
                    # so the time a node runs before an operator approves it is not lost.
                    return claim.ack("retry", "unknown_key", _awaiting(presented, noted))
            return self._reject(claim, e.reason, e.message)
        node = batch.node(record.key_id)
        if node is not None and node.node_id != record.node_id:
            return self._reject(
                claim,
                "node_mismatch",
                f"key {short_key_id(record.key_id)} is enrolled for node {node.node_id!r}, "
                f"not {record.node_id!r}",
            )
        if record.sequence > MAX_SEQUENCE:
            return self._reject(claim, "bad_sequence", f"sequence above {MAX_SEQUENCE}")
        # Measured time is read BEFORE the chain: a record another collector commits between
        # the two reads then shows in both, and is judged a duplicate, not an overlap.
        overlap = batch.overlap(record)
        verdict = judge(
            record.sequence,
            record.digest,
            record.previous_digest,
            batch.neighbours(record.key_id, record.sequence),
        )
        if verdict.verdict is Verdict.DUPLICATE:
            return claim.ack("duplicate")
        if verdict.verdict is Verdict.FORK:
            log.error(
                "chain fork: key %s (node %s) sequence %d: %s",
                short_key_id(record.key_id),
                record.node_id,
                record.sequence,
                verdict.detail,
            )
            self._forks.found(record, verdict.detail)
            return self._reject(claim, "chain_fork", verdict.detail)
        if overlap is not None:
            return self._reject(claim, "overlap", overlap)
        if first_use and presented is not None:
            self._store.enroll(presented, record.node_id)
            batch.node(record.key_id, refresh=True)
            log.warning(
                "trust on first use: enrolled key %s for node %s", record.key_id, record.node_id
            )
        batch.add(record)
        return claim.ack("accepted")

    def _not_yet(
        self,
        claim: _Claim,
        envelope: Envelope,
        key_id: str,
        batch: PendingBatch,
        error: VerificationError,
    ) -> Ack:
        """Answer retry for a sound record whose time is ahead of the clock; note its node."""
        att = parse_payload(envelope.payload, self._limits)  # verified but for its time
        ends = [iv.end_unix_ns for iv in att.intervals] + [g.end_unix_ns for g in att.gaps]
        node = batch.node(key_id)
        self._clocks.found(
            key_id,
            node.node_id if node is not None else att.node_id,
            claim.sequence,
            (max(ends) - self._now_ns()) / 1e9,
        )
        return claim.ack(
            "retry", "future", f"{error.message}; keep the record and send it again later"
        )

    def _trusted(
        self, envelope: Envelope, batch: PendingBatch, presented: bytes | None
    ) -> tuple[dict[str, Ed25519PublicKey], bool]:
        """Keys to verify with, and whether they are a first-use key not yet enrolled."""
        nodes = {kid: batch.node(kid) for kid, _ in envelope.signatures}
        trusted = {
            kid: self._public_key(n) for kid, n in nodes.items() if n and n.status == "enrolled"
        }
        if trusted:
            return trusted, False
        revoked = [kid for kid, n in nodes.items() if n is not None]
        if revoked:
            raise VerificationError("revoked_key", f"key {short_key_id(revoked[0])} was revoked")
        if self._tofu and presented is not None:
            kid = key_id_of_raw(presented)
            if kid in nodes:
                try:
                    return {kid: public_from_raw(presented)}, True
                except KeyFileError as e:
                    raise VerificationError("unknown_key", f"presented key: {e}") from e
        # Unverified text: repr, no newlines.
        ids = ", ".join(repr(short_key_id(kid)) for kid in nodes)
        raise VerificationError("unknown_key", f"no signature by an enrolled key (keyids: {ids})")

    def _public_key(self, node: NodeRecord) -> Ed25519PublicKey:
        key = self._public.get(node.key_id)
        if key is None:  # a key id names its key for good, so parsed keys are cached
            key = self._public[node.key_id] = public_from_raw(node.public_key)
        return key

    def _reject(self, claim: _Claim, reason: str, detail: str) -> Ack:
        return claim.ack("rejected", reason, detail)  # logged and counted by _note_rejections

    def _note_rejections(
        self, claims: Sequence[_Claim], acks: Sequence[Ack], batch: PendingBatch
    ) -> None:
        """Count and log (rate-limited) the batch's rejected records, each under the node its
        signing key is enrolled for, if any."""
        for claim, ack in zip(claims, acks, strict=True):
            if ack.status != "rejected":
                continue
            node = None
            for kid, _ in claim.envelope.signatures if claim.envelope is not None else ():
                if (found := batch.node(kid)) is not None:
                    node = found.node_id
                    break
            self.rejections.note(
                claim.peer,
                node,
                ack.reason,
                ack.detail,
                key_id=claim.key_id,
                sequence=claim.sequence,
            )

    def _commit(self, batch: PendingBatch) -> list[AlertEvent]:
        """Decide alerts from the totals after the batch; commit all of it; return new alerts."""
        if not batch.records:
            return []
        now = self._now_ns()
        deltas = aggregate(batch.records)
        before = self._store.totals_for(deltas)
        alerts = [
            event
            for job_id, delta in deltas.items()
            for event in self.policy.evaluate(delta.add_to(job_id, before.get(job_id)), now)
        ]
        return self._store.commit(batch.records, alerts, now)

    # -- after the commit ------------------------------------------------------------------
    def _count(self, acks: Sequence[Ack]) -> None:
        with self._lock:
            for a in acks:
                if a.status == "accepted":
                    self._accepted += 1
                elif a.status == "duplicate":
                    self._duplicate += 1
                elif a.status == "retry":
                    self._retry += 1
                else:
                    self._rejected[a.reason] = self._rejected.get(a.reason, 0) + 1

    def _refresh_view(self, records: Sequence[VerifiedRecord]) -> _View | None:
        """Update the metrics view with the committed totals of the jobs, keys, runs and
        accounts touched; return what was read (None if it cannot be read)."""
        if not records:
            return None
        try:
            totals = self._store.totals_for({job for r in records for job in r.sums.jobs})
            chains = self._store.chain_states({r.key_id for r in records})
            gpus = self._store.gpu_totals({r.key_id for r in records})
            runs, accounts = self._runs.read(
                {key for r in records for key in r.sums.runs}, self._now_ns()
            )
        except StoreError as e:  # committed already; only the metrics view lags
            log.error("cannot refresh the metrics view after a commit: %s", e)
            return None
        with self._lock:
            self._runs.apply(runs, accounts)
            self._jobs.update(totals)
            self._chains.update((c.key_id, c) for c in chains)
            self._gpus.update(((g.key_id, g.gpu), g) for g in gpus)
        return _View(totals, runs, accounts)

    def _crossed_meanwhile(self, totals: Mapping[str, JobTotal]) -> list[AlertEvent]:
        """Record and return alerts the committed totals call for that no commit recorded.

        Collectors sharing a database may commit to one job at once, each deciding alerts from
        the total it read before its commit: together they can cross a threshold neither saw.
        Totals read after the commit include both, and the store records each (job, threshold)
        once, so exactly one collector fires it. With one collector this finds nothing.
        """
        now = self._now_ns()
        late = [e for t in totals.values() for e in self.policy.evaluate(t, now)]
        if not late:
            return []
        try:
            return self._store.commit([], late, now)
        except StoreError as e:  # the job's next commit decides them again
            log.error("cannot record alerts crossed by concurrent commits: %s", e)
            return []

    def _emit(self, events: Sequence[Event]) -> None:
        # The alerts are recorded; a failing sink loses only its notification.
        notify(self._sinks, events)
