"""`Store` on an embedded SQLite database.

Durability: WAL journal with synchronous=FULL, so a transaction is on disk when COMMIT returns
and the collector may ack. Every write the ingest path makes for one batch is one transaction.

Threads: one SQLiteStore is one sqlite3 connection, used by one thread only (the collector's
ingest thread; sqlite3's same-thread check stays on). Other processes (an operator enrolling or
revoking a key) may open the same file: WAL lets them write while the collector reads, and a busy
database is waited on for `busy_timeout_s`.

Exact totals: FLOP sums are kept as decimal TEXT (they pass 2^63) and added as Python ints inside
the transaction (`flopwatch.collector.store.sqlite.writes`). The schema is versioned
(`flopwatch.collector.store.sqlite.schema`).

One collector per file: the collector opens its store `exclusive`, holding an flock on the
sidecar file PATH-collector.lock (`hold_collector_lock`) until it closes the store, and a second
collector on the same file refuses to start. Commands (`flopwatch nodes`, `report`) do not take
it, so they work while the collector runs. Why a sidecar file and not SQLite's own locks:
locking_mode=EXCLUSIVE would shut those commands out too, and a lock on the database file
itself is unsafe, because closing any other descriptor of that file in the process drops the
POSIX locks SQLite holds on it (and NFS turns flock into such locks).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.chain import Neighbours
from flopwatch.collector.config import AccountWindows, PendingKeyLimits
from flopwatch.collector.store import common
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
    days_kept,
    windows_of,
)
from flopwatch.collector.store.rows import (
    SELECT_ALERTS,
    SELECT_JOB_GPUS,
    SELECT_NODES,
    SELECT_SCOPE_ALERTS,
    alerts_in_order,
    job_gpu,
    job_total,
    node_record,
    scope_alert,
    scope_alert_row,
)
from flopwatch.collector.store.sqlite import (
    key_log,
    lineage,
    retention,
    runs,
    schema,
    tlog,
    writes,
)
from flopwatch.collector.store.sqlite import nodes as trust
from flopwatch.collector.store.sqlite.matching import keyed, select_matching
from flopwatch.errors import StoreError
from flopwatch.keys import short_key_id
from flopwatch.lineage import Parent, RunKey
from flopwatch.lockfile import HeldLock, hold
from flopwatch.statements import ENROLLED, NodeKeyStatement
from flopwatch.verify.record import VerifiedRecord

# Page cache (KiB): the per-GPU sums, runs of measured time and chain heads of a large fleet
# stay in memory while records stream past them (the default, 2 MiB, does not hold 8,000 GPUs).
CACHE_KIB = 64 * 1024


LOCK_SUFFIX = "-collector.lock"


def hold_collector_lock(path: Path) -> HeldLock:
    """The one-collector lock of the database at `path` (its real path: the same file under
    another name is the same database)."""
    real = path.resolve()
    return hold(
        real.with_name(real.name + LOCK_SUFFIX),
        f"database {path}",
        hint="another collector serves it; stop that one first (several collectors share a "
        "PostgreSQL database, never a SQLite file)",
    )


class SQLiteStore:
    """The collector's state in one SQLite file. See the module docstring for threading."""

    def __init__(
        self,
        path: Path,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        busy_timeout_s: float = 10.0,
        create: bool = True,
        exclusive: bool = False,
        account_days_kept: int = AccountWindows().kept_days,
    ) -> None:
        self._now_ns = now_ns
        self._sign_keys: SignKeyStatement | None = None  # log_key_statements
        self._days_kept = account_days_kept
        self._pruned_before: int | None = None  # account days deleted before this day
        self._lock = hold_collector_lock(path) if exclusive else None
        # Without `create`, SQLite's mode=rw opens an existing file and never makes one.
        target = str(path) if create else f"{path.absolute().as_uri()}?mode=rw"
        try:
            self._db = sqlite3.connect(
                target, isolation_level=None, timeout=busy_timeout_s, uri=not create
            )
        except sqlite3.Error as e:
            self._release()
            raise StoreError(f"cannot open database {path}: {e}") from e
        try:
            with self._errors(f"open {path}"):
                if not create and not schema.has_schema(self._db):
                    raise StoreError(f"{path} is not a flopwatch database (no flopwatch tables)")
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"database {path} cannot use WAL journaling (got {mode})")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            with self._tx("schema migration"):
                found = schema.migrate(self._db)
                if 0 < found < schema.RUN_LEAVES_VERSION:
                    tlog.backfill_runs(self._db)  # leaves logged before log_runs existed
                tlog.backfill(self._db)  # records held before the log existed
                if 0 < found < schema.RUNS_VERSION:
                    runs.backfill(self._db)  # jobs held before runs were totalled
        except StoreError:
            self._db.close()
            self._release()
            raise

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(f"{what}: {e}") from e

    @contextmanager
    def _tx(self, what: str) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._errors(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.rollback()
                raise

    def _one(self, sql: str, *args: Any) -> Any:
        return self._db.execute(sql, args).fetchone()

    def schema_version(self) -> int:
        with self._errors("read schema version"):
            return schema.current_version(self._db)

    def close(self) -> None:
        try:
            with self._errors("close database"):
                self._db.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- node keys -------------------------------------------------------------------------
    def enroll(self, public_raw: bytes, node_id: str) -> str:
        key_id = common.key_id_to_enroll(public_raw)  # 32 bytes, or KeyFileError
        if not node_id:
            raise StoreError("cannot enroll a key without a node id")
        with self._tx("enroll key"):
            held = self._one("SELECT node_id, status FROM nodes WHERE key_id = ?", key_id)
            if common.enrolled_for(key_id, node_id, held, StoreError):
                return key_id
            now = self._now_ns()
            self._db.execute(
                "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
                "VALUES (?, ?, ?, 'enrolled', ?)",
                (key_id, node_id, public_raw, now),
            )
            self._log_enrollment(node_id, public_raw, now)
        return key_id

    def _log_enrollment(self, node_id: str, public_raw: bytes, now: int) -> None:
        if self._sign_keys is not None:
            statement = NodeKeyStatement(node_id, public_raw, ENROLLED, now)
            key_log.log_statement(self._db, statement, self._sign_keys)

    def revoke(self, key_id: str) -> None:
        with self._tx("revoke key"):
            row = self._one("SELECT status FROM nodes WHERE key_id = ?", key_id)
            if row is None:
                raise StoreError(f"key {short_key_id(key_id)} is not enrolled")
            if row[0] != "revoked":
                self._db.execute(
                    "UPDATE nodes SET status = 'revoked', revoked_at_ns = ? WHERE key_id = ?",
                    (self._now_ns(), key_id),
                )
                tlog.note_revocation(self._db, key_id)
                r = self._one(SELECT_NODES + " WHERE key_id = ?", key_id)
                if self._sign_keys is not None and r is not None:
                    revoked = key_log.revocation(self._db, node_record(r))
                    key_log.log_statement(self._db, revoked, self._sign_keys)

    def log_key_statements(self, sign: SignKeyStatement) -> None:
        self._sign_keys = sign

    def log_missing_key_statements(self) -> int:
        if self._sign_keys is None:
            raise StoreError("no collector key to sign node key statements with")
        with self._tx("log node key statements"):
            rows = self._db.execute(SELECT_NODES + " ORDER BY key_id")
            nodes = [node_record(r) for r in rows]
            return key_log.log_missing(self._db, nodes, self._sign_keys)

    def nodes(self) -> list[NodeRecord]:
        with self._errors("list nodes"):
            rows = self._db.execute(SELECT_NODES + " ORDER BY key_id")
            return [node_record(r) for r in rows]

    def node(self, key_id: str) -> NodeRecord | None:
        with self._errors("read node"):
            r = self._one(SELECT_NODES + " WHERE key_id = ?", key_id)
        return None if r is None else node_record(r)

    def node_status(self, key_id: str) -> NodeStatus | None:
        return common.status_of(self.node(key_id))

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return common.trusted_keys(self.nodes())

    # -- enrollment tokens, keys awaiting approval, liveness (sqlite/nodes.py) -------------
    def add_enroll_token(self, token_hash: str, node_id: str, expires_at_ns: int) -> None:
        with self._tx("add enrollment token"):
            trust.add_token(self._db, token_hash, node_id, self._now_ns(), expires_at_ns)

    def redeem_enroll_token(self, token_hash: str, public_raw: bytes) -> str:
        with self._tx("redeem enrollment token"):
            key_id = trust.redeem_token(self._db, token_hash, public_raw, self._now_ns())
            r = self._one(SELECT_NODES + " WHERE key_id = ?", key_id)
            if r is not None:
                n = node_record(r)
                self._log_enrollment(n.node_id, n.public_key, n.enrolled_at_ns)
            return key_id

    def note_pending_key(self, public_raw: bytes, node_id: str, limits: PendingKeyLimits) -> bool:
        with self._tx("note key awaiting approval"):
            return trust.note_pending(self._db, public_raw, node_id, self._now_ns(), limits)

    def remove_pending_keys(self, key_ids: Collection[str]) -> int:
        with self._tx("remove keys awaiting approval"):
            return trust.remove_pending(self._db, key_ids)

    def pending_keys(self) -> list[PendingKey]:
        with self._errors("list keys awaiting approval"):
            return trust.pending_keys(self._db)

    def note_clock_ahead(self, notes: Collection[ClockNote]) -> None:
        with self._tx("note clock ahead"):
            trust.note_clock_ahead(self._db, notes)

    def claim_silence_alert(self, key_id: str, since_ns: int) -> bool:
        with self._tx("claim silence alert"):
            return trust.claim_silence(self._db, key_id, since_ns)

    def gpu_totals(self, key_ids: Collection[str] | None = None) -> list[GpuTotal]:
        with self._errors("read GPU totals"):
            return trust.gpu_totals(self._db, key_ids)

    # -- chains and coverage ---------------------------------------------------------------
    def neighbours(self, key_id: str, sequence: int) -> Neighbours:
        held = self.chain_around([(key_id, sequence)]).get(key_id, {})
        return Neighbours.around(sequence, held.get)

    def chain_around(self, wanted: Collection[tuple[str, int]]) -> common.ChainRows:
        with self._errors("read chain"):
            rows = select_matching(
                self._db,
                "WITH w (key_id, first, last) AS ({rows}) SELECT r.key_id, r.sequence, "
                "r.digest, r.previous_digest FROM w JOIN records r ON r.key_id = w.key_id "
                "AND r.sequence BETWEEN w.first AND w.last",
                common.around(wanted),
            )
        return common.chain_rows(rows)

    def held_sequences(self, key_id: str) -> list[int]:
        with self._errors("read chain"):
            rows = self._db.execute(
                "SELECT sequence FROM records WHERE key_id = ? ORDER BY sequence", (key_id,)
            )
            return [int(r[0]) for r in rows]

    def chain_states(self, key_ids: Collection[str] | None = None) -> list[ChainState]:
        sql = (
            "SELECT c.key_id, n.node_id, c.held, c.highest FROM chains c "
            "JOIN nodes n ON n.key_id = c.key_id"
        )
        with self._errors("read chain states"):
            if key_ids is None:
                rows = self._db.execute(sql).fetchall()
            else:
                sql += " WHERE c.key_id IN ({rows})"
                rows = select_matching(self._db, sql, keyed(key_ids))
        states = [ChainState(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
        return sorted(states, key=lambda c: c.key_id)

    def coverage(self, gpu: str, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        return self.coverage_of([(gpu, start_ns, end_ns)])[(gpu, start_ns, end_ns)]

    def coverage_of(
        self, spans: Collection[common.Span]
    ) -> dict[common.Span, list[tuple[int, int]]]:
        # Per span: the run starting at or before its start (it may reach in), and every run
        # starting inside it.
        ordered = sorted(set(spans))
        with self._errors("read coverage"):
            rows = select_matching(
                self._db,
                "WITH w (i, gpu, lo, hi) AS ({rows}) SELECT w.i, c.start_ns, c.end_ns FROM w "
                "JOIN coverage c ON c.gpu = w.gpu AND c.start_ns < w.hi AND c.start_ns >= "
                "coalesce((SELECT start_ns FROM coverage WHERE gpu = w.gpu AND start_ns <= w.lo "
                "ORDER BY start_ns DESC LIMIT 1), w.lo)",
                [(i, *span) for i, span in enumerate(ordered)],
            )
        return common.coverage_rows(ordered, rows)

    def measured_by(self, gpu: str, start_ns: int, end_ns: int) -> tuple[str, str] | None:
        with self._errors("read GPU totals"):
            row = self._one(
                "SELECT key_id, node_id FROM gpu_totals WHERE gpu = ? AND first_start_ns < ? "
                "AND last_end_ns > ? ORDER BY first_start_ns, key_id LIMIT 1",
                gpu,
                end_ns,
                start_ns,
            )
        return None if row is None else (row[0], row[1])

    # -- totals and alerts -----------------------------------------------------------------
    _TOTALS = (
        "SELECT job_id, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM job_totals"
    )

    def _thresholds(self, job_ids: Collection[str] | None) -> dict[str, tuple[int, ...]]:
        sql = "SELECT job_id, threshold FROM alerts"
        if job_ids is None:
            rows = self._db.execute(sql).fetchall()
        else:
            sql += " WHERE job_id IN ({rows})"
            rows = select_matching(self._db, sql, keyed(job_ids))
        out: dict[str, list[int]] = {}
        for job_id, threshold in rows:
            out.setdefault(job_id, []).append(int(threshold))
        return {j: tuple(sorted(t)) for j, t in out.items()}

    @staticmethod
    def _total(r: Any, crossed: dict[str, tuple[int, ...]]) -> JobTotal:
        return job_total(r, crossed.get(r[0], ()))

    def totals_for(self, job_ids: Collection[str]) -> dict[str, JobTotal]:
        with self._errors("read job totals"):
            crossed = self._thresholds(job_ids)
            rows = select_matching(
                self._db, self._TOTALS + " WHERE job_id IN ({rows})", keyed(job_ids)
            )
            return {r[0]: self._total(r, crossed) for r in rows}

    def job_totals(self, prefix: str = "") -> list[JobTotal]:
        with self._errors("read job totals"):
            crossed = self._thresholds(None)
            rows = self._db.execute(
                self._TOTALS + " WHERE substr(job_id, 1, ?) = ? ORDER BY job_id",
                (len(prefix), prefix),
            )
            return [self._total(r, crossed) for r in rows]

    def job_gpus(self, job_id: str) -> list[JobGpu]:
        with self._errors("read job GPUs"):
            rows = self._db.execute(
                SELECT_JOB_GPUS + " WHERE job_id = ? ORDER BY node_id, gpu_uuid",
                (job_id,),
            )
            return [job_gpu(r) for r in rows]

    def job_page(self, prefix: str, after: str, limit: int) -> list[JobTotal]:
        with self._errors("read job totals"):
            rows = self._db.execute(
                self._TOTALS + " WHERE job_id >= ? AND job_id > ? AND substr(job_id, 1, ?) = ? "
                "ORDER BY job_id LIMIT ?",
                (prefix, after, len(prefix), prefix, limit),
            ).fetchall()
            crossed = self._thresholds([r[0] for r in rows])
            return [self._total(r, crossed) for r in rows]

    def job_gpu_page(self, job_id: str, after: tuple[str, str], limit: int) -> list[JobGpu]:
        with self._errors("read job GPUs"):
            rows = self._db.execute(
                SELECT_JOB_GPUS + " WHERE job_id = ? "
                "AND (key_id, gpu_uuid) > (?, ?) ORDER BY key_id, gpu_uuid LIMIT ?",
                (job_id, *after, limit),
            )
            return [job_gpu(r) for r in rows]

    def run_page(
        self, account: str | None, prefix: str, after: tuple[str, str], limit: int
    ) -> list[RunTotal]:
        with self._errors("read run totals"):
            return runs.run_page(self._db, account, prefix, after, limit)

    def add_declaration(self, decl: Declaration, envelope: bytes, check: Check) -> int:
        with self._tx("declare run lineage"):
            return lineage.add_declaration(self._db, decl, envelope, check)

    def lineage_parents(self) -> dict[RunKey, Parent]:
        with self._errors("read run lineage"):
            return lineage.parents(self._db)

    def declaration_leaf(self, key: RunKey) -> int | None:
        with self._errors("read run lineage"):
            return lineage.declaration_leaf(self._db, key)

    def account_page(self, prefix: str, after: str | None, limit: int) -> list[AccountTotal]:
        with self._errors("read account totals"):
            return runs.account_page(self._db, prefix, after, limit)

    def account_windows(
        self, accounts: Collection[str], today: int, windows: Sequence[int]
    ) -> dict[str, tuple[WindowTotal, ...]]:
        with self._errors("read account windows"):
            rows = runs.account_days(self._db, accounts, today - max(windows, default=1) + 1)
        return windows_of(accounts, rows, today, windows)

    def fired_alerts(self) -> list[AlertEvent]:
        with self._errors("read alerts"):
            rows = self._db.execute(SELECT_ALERTS).fetchall()
        return alerts_in_order(rows)

    def runs_for(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], RunTotal]:
        with self._errors("read run totals"):
            return {(t.account, t.run): t for t in runs.runs_among(self._db, keys)}

    def run_recent(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], JobDelta]:
        with self._errors("read run days"):
            return runs.run_recent(self._db, keys)

    def record_scope_alerts(self, alerts: Sequence[ScopeAlert]) -> list[ScopeAlert]:
        if not alerts:
            return []
        new = []
        with self._tx("record scope alerts"):
            for a in alerts:
                cur = self._db.execute(
                    "INSERT INTO scope_alerts (scope, account, run, window_days, kind, "
                    "threshold, rule, meaning, source, basis, value, at_ns, rate, eta_s) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    scope_alert_row(a),
                )
                if cur.rowcount == 1:
                    new.append(a)
        return new

    def fired_scope_alerts(self) -> list[ScopeAlert]:
        with self._errors("read scope alerts"):
            rows = self._db.execute(SELECT_SCOPE_ALERTS).fetchall()
        return [scope_alert(r) for r in rows]

    # -- transparency log (tlog.py) --------------------------------------------------------
    def log_size(self) -> int:
        with self._errors("read log size"):
            return tlog.log_size(self._db)

    def log_nodes(self, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._errors("read log nodes"):
            return tlog.log_nodes(self._db, nodes)

    def log_entries(self, start: int, end: int) -> list[bytes]:
        with self._errors("read log entries"):
            return tlog.log_entries(self._db, start, end)

    def log_leaf_index(self, key_id: str, sequence: int) -> int | None:
        with self._errors("find log leaf"):
            return tlog.leaf_index(self._db, key_id, sequence)

    def job_evidence(self, job_id: str) -> JobEvidence | None:
        with self._errors("read job evidence"), tlog.snapshot(self._db):
            total = self.totals_for([job_id]).get(job_id)
            return None if total is None else tlog.job_evidence(self._db, total, self.node)

    def run_evidence(self, account: str, run: str) -> RunEvidence | None:
        with self._errors("read run evidence"), tlog.snapshot(self._db):
            total = runs.run_total_of(self._db, account, run)
            return None if total is None else tlog.run_evidence(self._db, total, self.node)

    def scope_leaves(
        self, scope: LeafScope, after_leaf: int, below_leaf: int, limit: int
    ) -> list[ScopeLeaf]:
        with self._errors("read a page of leaves"):
            return tlog.scope_leaves(self._db, scope, after_leaf, below_leaf, limit)

    def revoked_at(self, key_ids: Collection[str]) -> dict[str, int]:
        with self._errors("read revocations"):
            return tlog.revoked_at(self._db, key_ids)

    def add_tree_head(self, tree_size: int, timestamp_ns: int, envelope: bytes) -> None:
        with self._tx("store tree head"):
            tlog.add_tree_head(self._db, tree_size, timestamp_ns, envelope)

    def latest_tree_head(self) -> bytes | None:
        with self._errors("read tree head"):
            return tlog.latest_tree_head(self._db)

    def add_published_checkpoint(self, origin: str, tree_size: int, note: bytes) -> None:
        with self._tx("store published checkpoint"):
            tlog.add_published_checkpoint(self._db, origin, tree_size, note, self._now_ns())

    def published_checkpoint(self, origin: str) -> bytes | None:
        with self._errors("read published checkpoint"):
            return tlog.published_checkpoint(self._db, origin)

    # -- retention (retention.py) ----------------------------------------------------------
    def archivable(
        self, before_ns: int, after_leaf: int, below_leaf: int, limit: int
    ) -> list[LogEntry]:
        with self._errors("read archivable records"):
            return retention.archivable(self._db, before_ns, after_leaf, below_leaf, limit)

    def prune_envelopes(self, candidates: Sequence[PruneCandidate], before_ns: int) -> list[int]:
        with self._tx("prune archived envelopes"):
            return retention.prune(self._db, candidates, before_ns)

    # -- the one write path ----------------------------------------------------------------
    def commit(
        self, records: Sequence[VerifiedRecord], alerts: Sequence[AlertEvent], received_at_ns: int
    ) -> list[AlertEvent]:
        days = days_kept(received_at_ns, self._days_kept, self._pruned_before)
        with self._tx("commit batch"):
            new = writes.write_batch(self._db, records, alerts, received_at_ns, days=days)
        self._pruned_before = days.first_day
        return new
