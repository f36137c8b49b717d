"""The SQLite schema of the collector's store, as numbered migrations.

`MIGRATIONS[i]` takes a database from version i to i + 1; the version reached is recorded in
`schema_version`. A migration is only ever appended, never edited once released. FLOP sums are
TEXT (decimal): they pass 2^63. Thresholds are TEXT for the same reason.
"""

from __future__ import annotations

import sqlite3

from flopwatch.collector.store import common

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE nodes (
            key_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, public_key BLOB NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('enrolled', 'revoked')),
            enrolled_at_ns INTEGER NOT NULL, revoked_at_ns INTEGER)""",
        # Every accepted envelope, as received; the chain per key is (sequence, digest, previous).
        """CREATE TABLE records (
            key_id TEXT NOT NULL REFERENCES nodes (key_id), sequence INTEGER NOT NULL,
            digest BLOB NOT NULL, previous_digest BLOB NOT NULL, node_id TEXT NOT NULL,
            envelope BLOB NOT NULL, received_at_ns INTEGER NOT NULL,
            PRIMARY KEY (key_id, sequence)) WITHOUT ROWID""",
        # Per key: records held and highest sequence; highest - held are missing.
        """CREATE TABLE chains (
            key_id TEXT PRIMARY KEY REFERENCES nodes (key_id),
            held INTEGER NOT NULL, highest INTEGER NOT NULL)""",
        """CREATE TABLE job_totals (
            job_id TEXT PRIMARY KEY, flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL)""",
        # Which nodes and GPUs contributed what to a job.
        """CREATE TABLE job_gpus (
            job_id TEXT NOT NULL, key_id TEXT NOT NULL, gpu_uuid TEXT NOT NULL,
            node_id TEXT NOT NULL, flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL,
            PRIMARY KEY (job_id, key_id, gpu_uuid)) WITHOUT ROWID""",
        """CREATE TABLE gaps (
            key_id TEXT NOT NULL, sequence INTEGER NOT NULL, gpu_uuid TEXT NOT NULL,
            start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, reason TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX gaps_by_record ON gaps (key_id, sequence)",
        # Measured time per device (gpu_key), as disjoint runs joined where they touch.
        """CREATE TABLE coverage (
            gpu TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            PRIMARY KEY (gpu, start_ns)) WITHOUT ROWID""",
        """CREATE TABLE alerts (
            job_id TEXT NOT NULL, threshold TEXT NOT NULL, basis TEXT NOT NULL,
            value TEXT NOT NULL, at_ns INTEGER NOT NULL, next_threshold TEXT,
            next_seconds REAL, PRIMARY KEY (job_id, threshold)) WITHOUT ROWID""",
    ),
    # Node trust and liveness (issue 4): when each key last delivered, which silence was
    # alerted, one-time enrollment tokens (by hash), keys awaiting approval, per-GPU sums.
    (
        "ALTER TABLE nodes ADD COLUMN last_record_ns INTEGER",
        "ALTER TABLE nodes ADD COLUMN silence_alerted_ns INTEGER",
        """UPDATE nodes SET last_record_ns =
            (SELECT max(received_at_ns) FROM records r WHERE r.key_id = nodes.key_id)""",
        """CREATE TABLE enroll_tokens (
            token_hash TEXT PRIMARY KEY, node_id TEXT NOT NULL, created_at_ns INTEGER NOT NULL,
            expires_at_ns INTEGER NOT NULL, used_at_ns INTEGER, used_by_key_id TEXT)""",
        """CREATE TABLE pending_keys (
            key_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, public_key BLOB NOT NULL,
            first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL)""",
        # Whole-device sums per (key, gpu_key); records held before this migration are not in
        # them (their figures are inside the envelopes only).
        """CREATE TABLE gpu_totals (
            key_id TEXT NOT NULL, gpu TEXT NOT NULL, node_id TEXT NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL, PRIMARY KEY (key_id, gpu)) WITHOUT ROWID""",
    ),
    # Transparency log (issue 5, flopwatch.collector.store.sqlite.tlog): the RFC 6962 hash of every
    # complete subtree (level 0: leaf hashes), the record each leaf holds and each record's leaf,
    # leaves by job, signed tree heads, and the log size at each revocation. Every index here grows
    # at its right end or near a few hot keys (no index on hashes), so appends stay cheap however
    # large the log. Records held before this migration are queued in log_backfill, in the order
    # they were received, and logged when the store next opens.
    (
        """CREATE TABLE log_nodes (
            level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
            PRIMARY KEY (level, idx)) WITHOUT ROWID""",
        """CREATE TABLE log_leaves (
            leaf_index INTEGER PRIMARY KEY, key_id TEXT NOT NULL, sequence INTEGER NOT NULL)""",
        "ALTER TABLE records ADD COLUMN leaf_index INTEGER",
        """CREATE TABLE log_jobs (
            job_id TEXT NOT NULL, leaf_index INTEGER NOT NULL,
            PRIMARY KEY (job_id, leaf_index)) WITHOUT ROWID""",
        """CREATE TABLE tree_heads (
            tree_size INTEGER PRIMARY KEY, timestamp_ns INTEGER NOT NULL,
            envelope BLOB NOT NULL)""",
        """CREATE TABLE log_revocations (
            key_id TEXT PRIMARY KEY, log_size INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE log_backfill (
            n INTEGER PRIMARY KEY, key_id TEXT NOT NULL, sequence INTEGER NOT NULL)""",
        """INSERT INTO log_backfill (key_id, sequence)
            SELECT key_id, sequence FROM records ORDER BY received_at_ns, key_id, sequence""",
        # Keys revoked before the log existed: their records received up to the revocation
        # are the first leaves of the backfill, in received order.
        """INSERT INTO log_revocations
            SELECT n.key_id, (SELECT count(*) FROM records r
                              WHERE r.received_at_ns <= n.revoked_at_ns)
            FROM nodes n WHERE n.status = 'revoked'""",
    ),
    # The log's last published checkpoint per origin (a C2SP signed note with its witnesses'
    # cosignatures), served again after a restart (flopwatch.collector.log.tlog_service).
    (
        """CREATE TABLE published_checkpoints (
            origin TEXT PRIMARY KEY, tree_size INTEGER NOT NULL, note BLOB NOT NULL,
            published_at_ns INTEGER NOT NULL) WITHOUT ROWID""",
    ),
    # Clock health (issue 17): the latest record of a key answered retry because its time ends
    # ahead of the collector's clock (how far, when noted), so `nodes list` shows the node
    # unhealthy until one of its records is committed again.
    (
        "ALTER TABLE nodes ADD COLUMN clock_ahead_ns INTEGER",
        "ALTER TABLE nodes ADD COLUMN clock_ahead_at_ns INTEGER",
    ),
    # Runs and accounts (issue 14, flopwatch.collector.store.sqlite.runs): GPU time (fs) and GPU
    # board energy (nJ) per job; totals per run (account, run name) and per account, with the
    # set of workload classes seen (flopwatch.runs.CLASS_BIT); per account and UTC day, what the
    # rolling windows add up (days before the kept bound are deleted). Jobs held before this
    # migration are copied as runs of their own, account unknown, by `runs.backfill` (their
    # records name no run or account); their GPU time and energy stay in their envelopes.
    (
        "ALTER TABLE job_totals ADD COLUMN gpu_time_fs TEXT NOT NULL DEFAULT '0'",
        "ALTER TABLE job_totals ADD COLUMN energy_nj TEXT NOT NULL DEFAULT '0'",
        """CREATE TABLE run_totals (
            account TEXT NOT NULL, run TEXT NOT NULL, classes INTEGER NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL, gpu_time_fs TEXT NOT NULL, energy_nj TEXT NOT NULL,
            PRIMARY KEY (account, run)) WITHOUT ROWID""",
        """CREATE TABLE account_totals (
            account TEXT PRIMARY KEY, classes INTEGER NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL, gpu_time_fs TEXT NOT NULL,
            energy_nj TEXT NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE account_days (
            account TEXT NOT NULL, day INTEGER NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL, gpu_time_fs TEXT NOT NULL, energy_nj TEXT NOT NULL,
            PRIMARY KEY (account, day)) WITHOUT ROWID""",
        "CREATE INDEX account_days_by_day ON account_days (day)",
    ),
    # Thresholds by scope (issue 14, flopwatch.collector.alerts.scopes): alerts of runs and of
    # account windows, crossed or forecast, each recorded once, ever, by its primary key.
    (
        """CREATE TABLE scope_alerts (
            scope TEXT NOT NULL, account TEXT NOT NULL, run TEXT NOT NULL,
            window_days INTEGER NOT NULL, kind TEXT NOT NULL, threshold TEXT NOT NULL,
            rule TEXT NOT NULL, meaning TEXT NOT NULL, source TEXT NOT NULL, basis TEXT NOT NULL,
            value TEXT NOT NULL, at_ns INTEGER NOT NULL, rate REAL, eta_s REAL,
            PRIMARY KEY (scope, account, run, window_days, kind, threshold)) WITHOUT ROWID""",
    ),
    # Run reports (issue 15, `flopwatch report --run`): log leaves by run (account, run name),
    # as log_jobs indexes them by job; written with the leaf, in the commit that adds the
    # record to the run's totals. Leaves logged before this migration are indexed by
    # `tlog.backfill_runs` when the store next opens (archived, pruned envelopes cannot be).
    (
        """CREATE TABLE log_runs (
            account TEXT NOT NULL, run TEXT NOT NULL, leaf_index INTEGER NOT NULL,
            PRIMARY KEY (account, run, leaf_index)) WITHOUT ROWID""",
    ),
    # Run lineage (flopwatch.lineage): one row per declaration, never changed; its signed
    # envelope is also a leaf of the log (log_leaves key_id DECLARATION_KEY_ID, sequence n).
    # A foreign parent's cumulative totals are those of its verified run claim.
    (
        """CREATE TABLE run_lineage (
            n INTEGER PRIMARY KEY, account TEXT NOT NULL, run TEXT NOT NULL,
            class TEXT NOT NULL, parent_account TEXT NOT NULL, parent_run TEXT NOT NULL,
            parent_collector TEXT NOT NULL, parent_flops_estimate TEXT NOT NULL,
            parent_flops_upper TEXT NOT NULL, parent_gpu_time_fs TEXT NOT NULL,
            parent_energy_nj TEXT NOT NULL, declared_at_ns INTEGER NOT NULL,
            envelope BLOB NOT NULL, leaf_index INTEGER NOT NULL, UNIQUE (account, run))""",
    ),
    # Node key statements (flopwatch.statements.NodeKeyStatement, store/key_rows.py): one row
    # per key and action (enrolled, revoked), never changed; its signed envelope is also a leaf
    # of the log (log_leaves key_id KEY_STATEMENT_KEY_ID, sequence n). Keys enrolled before this
    # migration are logged when the collector next starts (log_missing_key_statements).
    (
        """CREATE TABLE key_statements (
            n INTEGER PRIMARY KEY, key_id TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('enrolled', 'revoked')),
            at_ns INTEGER NOT NULL, envelope BLOB NOT NULL, leaf_index INTEGER NOT NULL,
            UNIQUE (key_id, action))""",
    ),
    # A run's current rate (forecasts, flopwatch.collector.alerts.scopes): per run and UTC day,
    # the last `RUN_RATE_DAYS` days only (older ones are deleted as account days are). Runs
    # held before this migration have no days: their rate is measured from their next records.
    (
        """CREATE TABLE run_days (
            account TEXT NOT NULL, run TEXT NOT NULL, day INTEGER NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            first_start_ns INTEGER NOT NULL, last_end_ns INTEGER NOT NULL,
            gpu_intervals INTEGER NOT NULL, gpu_time_fs TEXT NOT NULL, energy_nj TEXT NOT NULL,
            PRIMARY KEY (account, run, day)) WITHOUT ROWID""",
        "CREATE INDEX run_days_by_day ON run_days (day)",
    ),
    # Sampled reports read figures, not envelopes (flopwatch.collector.sampled_report): each
    # log_jobs and log_runs row also holds the scope's figures in the record for its sum-tree
    # leaf (`flopwatch.sumtree.Sums.to_bytes`, 48 bytes) and the record's FLOP model version,
    # written in the same insert as the row at commit. Rows written before this migration keep
    # NULLs: a report reads those leaves' envelopes, as before (no backfill: it would read
    # every old envelope once at open, the work a report does for them anyway).
    (
        "ALTER TABLE log_jobs ADD COLUMN leaf_sums BLOB",
        "ALTER TABLE log_jobs ADD COLUMN flop_model_version TEXT",
        "ALTER TABLE log_runs ADD COLUMN leaf_sums BLOB",
        "ALTER TABLE log_runs ADD COLUMN flop_model_version TEXT",
    ),
)
RUNS_VERSION = 6  # the migration that added run and account totals (backfilled from jobs)
RUN_LEAVES_VERSION = 8  # the migration that indexed log leaves by run (backfilled at open)
LEAF_FIGURES_VERSION = 12  # the migration that stored sum-tree leaf figures (no backfill)
SCHEMA_VERSION = len(MIGRATIONS)


def has_schema(db: sqlite3.Connection) -> bool:
    """Whether the database holds flopwatch's tables (any version)."""
    row = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    return bool(row[0])


def current_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found (0: a new database). Call
    inside a write transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    found = current_version(db)
    common.migrate(
        MIGRATIONS,
        found,
        db.execute,
        lambda version: db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,)),
    )
    return found
