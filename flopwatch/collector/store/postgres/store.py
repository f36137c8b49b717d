"""`Store` on PostgreSQL, for one collector or several sharing one database.

Durability: every write the ingest path makes for one batch is one transaction, and the collector
acks only after COMMIT returns. The session keeps `synchronous_commit` at least `on` (a server
default of `off` is raised for this session), so a returned COMMIT is on disk.

Several collectors: each holds its own connection; `flopwatch.collector.store.postgres.writes`
re-judges a batch under per-key and per-device advisory locks inside the commit and raises
StoreConflictError for anything another collector committed first, so the ingestor can judge the
batch again. Totals are added in place (`x = x + delta`); alerts are inserted ON CONFLICT DO
NOTHING. See docs/postgresql.md.

Threads: one PostgresStore is one connection, used by one thread (the collector's ingest
thread). A connection the server dropped is replaced on the next call; the call that met the
drop raises StoreError (the ingestor acks its batch "retry").

Schema: `flopwatch.collector.store.postgres.schema`, in the first schema of the connection's
search_path (select another with `?options=-csearch_path%3DNAME` in the URL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import errors as pg_errors

from flopwatch.chain import Neighbours
from flopwatch.collector.config import AccountWindows, PendingKeyLimits
from flopwatch.collector.store import common
from flopwatch.collector.store.factory import redacted
from flopwatch.collector.store.key_rows import SignKeyStatement
from flopwatch.collector.store.lineage_rows import Check, Declaration
from flopwatch.collector.store.postgres import (
    key_log,
    lineage,
    retention,
    runs,
    schema,
    tlog,
    writes,
)
from flopwatch.collector.store.postgres import nodes as trust
from flopwatch.collector.store.postgres.locks import Cur, lock_keys_and_devices
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
    SELECT_RUNS,
    SELECT_SCOPE_ALERTS,
    alerts_in_order,
    job_gpu,
    job_total,
    node_record,
    run_total,
    scope_alert,
    scope_alert_row,
)
from flopwatch.errors import StoreConflictError, StoreError
from flopwatch.keys import short_key_id
from flopwatch.lineage import Parent, RunKey
from flopwatch.statements import ENROLLED, NodeKeyStatement
from flopwatch.verify.record import VerifiedRecord

log = logging.getLogger(__name__)

# Aborted by the server with nothing applied, because of another writer: judge again.
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def _int(value: Decimal | int) -> int:
    return int(value)  # NUMERIC(40, 0) arrives as an integral Decimal: exact


class PostgresStore:
    """The collector's state in a PostgreSQL schema. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        connect_timeout_s: int = 10,
        create: bool = True,
        account_days_kept: int = AccountWindows().kept_days,
    ) -> None:
        """`create`: make the tables in an empty schema (the collector); without it (read-only
        commands, `nodes`), a schema without flopwatch's tables is a StoreError and nothing is
        created. An existing schema of an older version is migrated either way."""
        self._url = url
        self._now_ns = now_ns
        self._sign_keys: SignKeyStatement | None = None  # log_key_statements
        self._days_kept = account_days_kept
        self._pruned_before: int | None = None  # account days deleted before this day
        self._timeout = connect_timeout_s
        self._db = self._connect()
        try:
            if not create:
                self._check_tables()
            with self._tx("schema migration") as cur:
                found = schema.migrate(cur)
                if 0 < found < schema.RUN_LEAVES_VERSION:
                    tlog.backfill_runs(cur)  # leaves logged before log_runs existed
        except StoreError:
            self._db.close()
            raise

    def _check_tables(self) -> None:
        with self._errors("read schema version"), self._db.cursor() as cur:
            found = schema.current_version(cur)
        if found == 0:
            raise StoreError(
                f"database {redacted(self._url)} holds no flopwatch tables (schema "
                f"{self.scope!r}): check --db (the collector creates them on first start; other "
                "commands never do)"
            )

    # -- plumbing --------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        where = redacted(self._url)
        try:
            db = psycopg.connect(self._url, autocommit=True, connect_timeout=self._timeout)
        except psycopg.Error as e:
            raise StoreError(f"cannot open database {where}: {e}") from e
        try:
            schema = db.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise StoreError(f"database {where}: no schema of the search_path exists")
            self.scope: str = schema[0]
            sync = db.execute("SHOW synchronous_commit").fetchone()
            if sync is not None and sync[0] == "off":
                log.warning("synchronous_commit is off on %s; this session turns it on", where)
                db.execute("SET synchronous_commit = on")
        except psycopg.Error as e:
            db.close()
            raise StoreError(f"cannot open database {where}: {e}") from e
        except StoreError:
            db.close()
            raise
        return db

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        if self._db.broken:
            log.warning("database connection was lost; reconnecting")
            self._db.close()
            self._db = self._connect()
        try:
            yield
        except _CONFLICTS as e:
            raise StoreConflictError(f"{what}: {e}") from e
        except psycopg.Error as e:
            raise StoreError(f"{what}: {e}") from e

    @contextmanager
    def _tx(self, what: str) -> Iterator[Cur]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._errors(what), self._db.transaction(), self._db.cursor() as cur:
            yield cur

    @contextmanager
    def _snapshot(self, what: str) -> Iterator[Cur]:
        """One read-only transaction: every read inside sees the same committed state."""
        with self._tx(what) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    def _rows(
        self, what: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with self._errors(what), self._db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def schema_version(self) -> int:
        with self._errors("read schema version"), self._db.cursor() as cur:
            return schema.current_version(cur)

    def close(self) -> None:
        self._db.close()

    # -- node keys -------------------------------------------------------------------------
    def enroll(self, public_raw: bytes, node_id: str) -> str:
        key_id = common.key_id_to_enroll(public_raw)  # 32 bytes, or KeyFileError
        if not node_id:
            raise StoreError("cannot enroll a key without a node id")
        with self._tx("enroll key") as cur:
            # Insert first, then read what is there: two collectors enrolling at once agree.
            now = self._now_ns()
            cur.execute(
                "INSERT INTO nodes (key_id, node_id, public_key, status, enrolled_at_ns) "
                "VALUES (%s, %s, %s, 'enrolled', %s) ON CONFLICT (key_id) DO NOTHING",
                (key_id, node_id, public_raw, now),
            )
            inserted = cur.rowcount == 1
            cur.execute("SELECT node_id, status FROM nodes WHERE key_id = %s", (key_id,))
            held = cur.fetchone() or ("", "")
            if inserted:
                self._log_enrollment(cur, node_id, public_raw, now)
        common.enrolled_for(key_id, node_id, held, StoreError)
        return key_id

    def _log_enrollment(self, cur: Cur, node_id: str, public_raw: bytes, now: int) -> None:
        if self._sign_keys is not None:
            statement = NodeKeyStatement(node_id, public_raw, ENROLLED, now)
            key_log.log_statement(cur, self.scope, statement, self._sign_keys)

    def log_key_statements(self, sign: SignKeyStatement) -> None:
        self._sign_keys = sign

    def log_missing_key_statements(self) -> int:
        if self._sign_keys is None:
            raise StoreError("no collector key to sign node key statements with")
        with self._tx("log node key statements") as cur:
            cur.execute(SELECT_NODES + " ORDER BY key_id")
            nodes = [node_record(r) for r in cur.fetchall()]
            return key_log.log_missing(cur, self.scope, nodes, self._sign_keys)

    def revoke(self, key_id: str) -> None:
        with self._tx("revoke key") as cur:
            # The key's lock: a commit of its records either precedes this or sees it revoked.
            lock_keys_and_devices(cur, self.scope, [key_id], [])
            cur.execute(
                "UPDATE nodes SET status = 'revoked', revoked_at_ns = %s "
                "WHERE key_id = %s AND status <> 'revoked'",
                (self._now_ns(), key_id),
            )
            if cur.rowcount == 1:
                tlog.note_revocation(cur, self.scope, key_id)
                cur.execute(SELECT_NODES + " WHERE key_id = %s", (key_id,))
                r = cur.fetchone()
                if self._sign_keys is not None and r is not None:
                    revoked = key_log.revocation(cur, node_record(r))
                    key_log.log_statement(cur, self.scope, revoked, self._sign_keys)
                return
            cur.execute("SELECT 1 FROM nodes WHERE key_id = %s", (key_id,))
            if cur.fetchone() is None:
                raise StoreError(f"key {short_key_id(key_id)} is not enrolled")

    def nodes(self) -> list[NodeRecord]:
        return [node_record(r) for r in self._rows("list nodes", SELECT_NODES + " ORDER BY key_id")]

    def node(self, key_id: str) -> NodeRecord | None:
        rows = self._rows("read node", SELECT_NODES + " WHERE key_id = %s", (key_id,))
        return node_record(rows[0]) if rows else None

    def node_status(self, key_id: str) -> NodeStatus | None:
        return common.status_of(self.node(key_id))

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        return common.trusted_keys(self.nodes())

    # -- enrollment tokens, keys awaiting approval, liveness (postgres/nodes.py) -----------
    def add_enroll_token(self, token_hash: str, node_id: str, expires_at_ns: int) -> None:
        with self._tx("add enrollment token") as cur:
            trust.add_token(cur, token_hash, node_id, self._now_ns(), expires_at_ns)

    def redeem_enroll_token(self, token_hash: str, public_raw: bytes) -> str:
        with self._tx("redeem enrollment token") as cur:
            key_id = trust.redeem_token(cur, token_hash, public_raw, self._now_ns())
            cur.execute(SELECT_NODES + " WHERE key_id = %s", (key_id,))
            r = cur.fetchone()
            if r is not None:
                n = node_record(r)
                self._log_enrollment(cur, n.node_id, n.public_key, n.enrolled_at_ns)
            return key_id

    def note_pending_key(self, public_raw: bytes, node_id: str, limits: PendingKeyLimits) -> bool:
        with self._tx("note key awaiting approval") as cur:
            return trust.note_pending(
                cur, self.scope, public_raw, node_id, now_ns=self._now_ns(), limits=limits
            )

    def remove_pending_keys(self, key_ids: Collection[str]) -> int:
        with self._tx("remove keys awaiting approval") as cur:
            return trust.remove_pending(cur, key_ids)

    def pending_keys(self) -> list[PendingKey]:
        with self._tx("list keys awaiting approval") as cur:
            return trust.pending_keys(cur)

    def note_clock_ahead(self, notes: Collection[ClockNote]) -> None:
        with self._tx("note clock ahead") as cur:
            trust.note_clock_ahead(cur, notes)

    def claim_silence_alert(self, key_id: str, since_ns: int) -> bool:
        with self._tx("claim silence alert") as cur:
            return trust.claim_silence(cur, key_id, since_ns)

    def gpu_totals(self, key_ids: Collection[str] | None = None) -> list[GpuTotal]:
        with self._tx("read GPU totals") as cur:
            return trust.gpu_totals(cur, key_ids)

    # -- chains and coverage ---------------------------------------------------------------
    def neighbours(self, key_id: str, sequence: int) -> Neighbours:
        held = self.chain_around([(key_id, sequence)]).get(key_id, {})
        return Neighbours.around(sequence, held.get)

    def chain_around(self, wanted: Collection[tuple[str, int]]) -> common.ChainRows:
        ranges = common.around(wanted)
        if not ranges:
            return {}
        keys, firsts, lasts = zip(*ranges, strict=True)
        rows = self._rows(
            "read chain",
            "SELECT r.key_id, r.sequence, r.digest, r.previous_digest "
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS w (key_id, first, last) "
            "JOIN records r ON r.key_id = w.key_id AND r.sequence BETWEEN w.first AND w.last",
            (list(keys), list(firsts), list(lasts)),
        )
        return common.chain_rows(rows)

    def held_sequences(self, key_id: str) -> list[int]:
        rows = self._rows(
            "read chain",
            "SELECT sequence FROM records WHERE key_id = %s ORDER BY sequence",
            (key_id,),
        )
        return [int(r[0]) for r in rows]

    def chain_states(self, key_ids: Collection[str] | None = None) -> list[ChainState]:
        sql = (
            "SELECT c.key_id, n.node_id, c.held, c.highest FROM chains c "
            "JOIN nodes n ON n.key_id = c.key_id"
        )
        if key_ids is None:
            rows = self._rows("read chain states", sql + " ORDER BY c.key_id")
        else:
            rows = self._rows(
                "read chain states",
                sql + " WHERE c.key_id = ANY(%s) ORDER BY c.key_id",
                (sorted(key_ids),),
            )
        return [ChainState(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def coverage(self, gpu: str, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        return self.coverage_of([(gpu, start_ns, end_ns)])[(gpu, start_ns, end_ns)]

    def coverage_of(
        self, spans: Collection[common.Span]
    ) -> dict[common.Span, list[tuple[int, int]]]:
        # Per span: the run starting at or before its start (it may reach in), and every run
        # starting inside it.
        ordered = sorted(set(spans))
        if not ordered:
            return {}
        gpus, los, his = zip(*ordered, strict=True)
        rows = self._rows(
            "read coverage",
            "SELECT w.i - 1, c.start_ns, c.end_ns "
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) WITH ORDINALITY "
            "AS w (gpu, lo, hi, i) JOIN coverage c ON c.gpu = w.gpu AND c.start_ns < w.hi "
            "AND c.start_ns >= coalesce((SELECT max(start_ns) FROM coverage "
            "WHERE gpu = w.gpu AND start_ns <= w.lo), w.lo)",
            (list(gpus), list(los), list(his)),
        )
        return common.coverage_rows(ordered, rows)

    def measured_by(self, gpu: str, start_ns: int, end_ns: int) -> tuple[str, str] | None:
        rows = self._rows(
            "read GPU totals",
            "SELECT key_id, node_id FROM gpu_totals WHERE gpu = %s AND first_start_ns < %s "
            "AND last_end_ns > %s ORDER BY first_start_ns, key_id LIMIT 1",
            (gpu, end_ns, start_ns),
        )
        return None if not rows else (rows[0][0], rows[0][1])

    # -- totals and alerts -----------------------------------------------------------------
    _TOTALS = (
        "SELECT t.job_id, t.flops_estimate, t.flops_upper, t.first_start_ns, t.last_end_ns, "
        "t.gpu_intervals, t.gpu_time_fs, t.energy_nj, ARRAY(SELECT a.threshold FROM alerts a "
        "WHERE a.job_id = t.job_id ORDER BY a.threshold) FROM job_totals t"
    )

    @staticmethod
    def _total(r: tuple[Any, ...]) -> JobTotal:
        return job_total(r, tuple(_int(x) for x in r[8]))

    def totals_for(self, job_ids: Collection[str]) -> dict[str, JobTotal]:
        rows = self._rows(
            "read job totals", self._TOTALS + " WHERE t.job_id = ANY(%s)", (sorted(job_ids),)
        )
        return {r[0]: self._total(r) for r in rows}

    def job_totals(self, prefix: str = "") -> list[JobTotal]:
        rows = self._rows(
            "read job totals",
            # The range bound lets the primary key's index find the prefix ("C" collation).
            self._TOTALS + " WHERE t.job_id >= %(p)s AND starts_with(t.job_id, %(p)s) "
            "ORDER BY t.job_id",
            {"p": prefix},
        )
        return [self._total(r) for r in rows]

    def job_gpus(self, job_id: str) -> list[JobGpu]:
        rows = self._rows(
            "read job GPUs",
            SELECT_JOB_GPUS + " WHERE job_id = %s ORDER BY node_id, gpu_uuid",
            (job_id,),
        )
        return [job_gpu(r) for r in rows]

    def job_page(self, prefix: str, after: str, limit: int) -> list[JobTotal]:
        rows = self._rows(
            "read job totals",
            self._TOTALS + " WHERE t.job_id >= %(p)s AND t.job_id > %(after)s "
            "AND starts_with(t.job_id, %(p)s) ORDER BY t.job_id LIMIT %(limit)s",
            {"p": prefix, "after": after, "limit": limit},
        )
        return [self._total(r) for r in rows]

    def job_gpu_page(self, job_id: str, after: tuple[str, str], limit: int) -> list[JobGpu]:
        rows = self._rows(
            "read job GPUs",
            SELECT_JOB_GPUS + " WHERE job_id = %s "
            "AND (key_id, gpu_uuid) > (%s, %s) ORDER BY key_id, gpu_uuid LIMIT %s",
            (job_id, *after, limit),
        )
        return [job_gpu(r) for r in rows]

    def run_page(
        self, account: str | None, prefix: str, after: tuple[str, str], limit: int
    ) -> list[RunTotal]:
        with self._tx("read run totals") as cur:
            return runs.run_page(cur, account, prefix, after, limit)

    def add_declaration(self, decl: Declaration, envelope: bytes, check: Check) -> int:
        with self._tx("declare run lineage") as cur:
            return lineage.add_declaration(cur, self.scope, decl, envelope, check)

    def lineage_parents(self) -> dict[RunKey, Parent]:
        with self._tx("read run lineage") as cur:
            return lineage.parents(cur)

    def declaration_leaf(self, key: RunKey) -> int | None:
        with self._tx("read run lineage") as cur:
            return lineage.declaration_leaf(cur, key)

    def account_page(self, prefix: str, after: str | None, limit: int) -> list[AccountTotal]:
        with self._snapshot("read account totals") as cur:
            return runs.account_page(cur, prefix, after, limit)

    def account_windows(
        self, accounts: Collection[str], today: int, windows: Sequence[int]
    ) -> dict[str, tuple[WindowTotal, ...]]:
        with self._tx("read account windows") as cur:
            rows = runs.account_days(cur, accounts, today - max(windows, default=1) + 1)
        return windows_of(accounts, rows, today, windows)

    def fired_alerts(self) -> list[AlertEvent]:
        rows = self._rows("read alerts", SELECT_ALERTS)
        return alerts_in_order(rows)

    def runs_for(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], RunTotal]:
        if not keys:
            return {}
        accounts, names = zip(*sorted(keys), strict=True)
        where = " WHERE (account, run) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        rows = self._rows("read run totals", SELECT_RUNS + where, (list(accounts), list(names)))
        return {(t.account, t.run): t for t in map(run_total, rows)}

    def run_recent(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], JobDelta]:
        if not keys:
            return {}
        with self._errors("read run days"), self._db.cursor() as cur:
            return runs.run_recent(cur, keys)

    def record_scope_alerts(self, alerts: Sequence[ScopeAlert]) -> list[ScopeAlert]:
        new = set()
        with self._tx("record scope alerts") as cur:
            for a in sorted(alerts, key=lambda a: a.key):  # one order: no deadlock between two
                cur.execute(
                    "INSERT INTO scope_alerts (scope, account, run, window_days, kind, "
                    "threshold, rule, meaning, source, basis, value, at_ns, rate, eta_s) "
                    "VALUES (%s, %s, %s, %s, %s, %s::numeric, %s, %s, %s, %s, %s::numeric, "
                    "%s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING true",
                    scope_alert_row(a),
                )
                if cur.fetchone() is not None:
                    new.add(a.key)
        return [a for a in alerts if a.key in new]  # in the order given

    def fired_scope_alerts(self) -> list[ScopeAlert]:
        return [scope_alert(r) for r in self._rows("read scope alerts", SELECT_SCOPE_ALERTS)]

    # -- transparency log (tlog.py) --------------------------------------------------------
    def log_size(self) -> int:
        with self._tx("read log size") as cur:
            return tlog.log_size(cur)

    def log_nodes(self, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self._tx("read log nodes") as cur:
            return tlog.log_nodes(cur, nodes)

    def log_entries(self, start: int, end: int) -> list[bytes]:
        with self._tx("read log entries") as cur:
            return tlog.log_entries(cur, start, end)

    def log_leaf_index(self, key_id: str, sequence: int) -> int | None:
        with self._tx("find log leaf") as cur:
            return tlog.leaf_index(cur, key_id, sequence)

    def job_evidence(self, job_id: str) -> JobEvidence | None:
        with self._snapshot("read job evidence") as cur:
            total = self.totals_for([job_id]).get(job_id)
            return None if total is None else tlog.job_evidence(cur, total, self.node)

    def run_evidence(self, account: str, run: str) -> RunEvidence | None:
        with self._snapshot("read run evidence") as cur:
            total = runs.run_total_of(cur, account, run)
            return None if total is None else tlog.run_evidence(cur, total, self.node)

    def scope_leaves(
        self, scope: LeafScope, after_leaf: int, below_leaf: int, limit: int
    ) -> list[ScopeLeaf]:
        with self._tx("read a page of leaves") as cur:
            return tlog.scope_leaves(cur, scope, after_leaf, below_leaf, limit)

    def revoked_at(self, key_ids: Collection[str]) -> dict[str, int]:
        with self._tx("read revocations") as cur:
            return tlog.revoked_at(cur, key_ids)

    def add_tree_head(self, tree_size: int, timestamp_ns: int, envelope: bytes) -> None:
        with self._tx("store tree head") as cur:
            tlog.add_tree_head(cur, tree_size, timestamp_ns, envelope)

    def latest_tree_head(self) -> bytes | None:
        with self._tx("read tree head") as cur:
            return tlog.latest_tree_head(cur)

    def add_published_checkpoint(self, origin: str, tree_size: int, note: bytes) -> None:
        with self._tx("store published checkpoint") as cur:
            tlog.add_published_checkpoint(cur, origin, tree_size, note, self._now_ns())

    def published_checkpoint(self, origin: str) -> bytes | None:
        with self._tx("read published checkpoint") as cur:
            return tlog.published_checkpoint(cur, origin)

    # -- retention (retention.py) ----------------------------------------------------------
    def archivable(
        self, before_ns: int, after_leaf: int, below_leaf: int, limit: int
    ) -> list[LogEntry]:
        with self._tx("read archivable records") as cur:
            return retention.archivable(cur, before_ns, after_leaf, below_leaf, limit)

    def prune_envelopes(self, candidates: Sequence[PruneCandidate], before_ns: int) -> list[int]:
        with self._tx("prune archived envelopes") as cur:
            return retention.prune(cur, candidates, before_ns)

    # -- the one write path ----------------------------------------------------------------
    def commit(
        self, records: Sequence[VerifiedRecord], alerts: Sequence[AlertEvent], received_at_ns: int
    ) -> list[AlertEvent]:
        days = days_kept(received_at_ns, self._days_kept, self._pruned_before)
        with self._tx("commit batch") as cur:
            new = writes.write_batch(cur, self.scope, records, alerts, received_at_ns, days=days)
        self._pruned_before = days.first_day
        return new
