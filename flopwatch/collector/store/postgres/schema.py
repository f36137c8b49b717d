"""The PostgreSQL schema of the collector's store, as numbered migrations.

`MIGRATIONS[i]` takes a database from version i to i + 1; each version reached is a row of
`schema_version`. A migration is only ever appended, never edited once released. The numbering
is this backend's own: migration 1 is the schema PostgreSQL support first shipped with, which
holds what SQLite reached in its migrations 1-3 (core, node trust and liveness, transparency
log), so it needs none of their backfills.

Types: FLOP sums, thresholds and alert values are NUMERIC(40, 0), exact integers (they pass
2^63; 10^40 FLOPs is far beyond any job). Times are BIGINT nanoseconds. Identifiers are TEXT with
the "C" collation, so ordering and prefix ranges are by code point, as in SQLite.

Several collectors may start at once on an empty database: `migrate` runs under a
transaction-scoped advisory lock, so exactly one of them creates the tables and the others then
find the schema current.
"""

from __future__ import annotations

from typing import Any

from flopwatch.collector.store import common

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE nodes (
            key_id TEXT COLLATE "C" PRIMARY KEY, node_id TEXT COLLATE "C" NOT NULL,
            public_key BYTEA NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('enrolled', 'revoked')),
            enrolled_at_ns BIGINT NOT NULL, revoked_at_ns BIGINT,
            last_record_ns BIGINT, silence_alerted_ns BIGINT)""",
        # Every accepted envelope, as received; the chain per key is (sequence, digest, previous).
        """CREATE TABLE records (
            key_id TEXT COLLATE "C" NOT NULL REFERENCES nodes (key_id),
            sequence BIGINT NOT NULL, digest BYTEA NOT NULL, previous_digest BYTEA NOT NULL,
            node_id TEXT COLLATE "C" NOT NULL, envelope BYTEA NOT NULL,
            received_at_ns BIGINT NOT NULL, PRIMARY KEY (key_id, sequence))""",
        # Per key: records held and highest sequence; highest - held are missing.
        """CREATE TABLE chains (
            key_id TEXT COLLATE "C" PRIMARY KEY REFERENCES nodes (key_id),
            held BIGINT NOT NULL, highest BIGINT NOT NULL)""",
        """CREATE TABLE job_totals (
            job_id TEXT COLLATE "C" PRIMARY KEY,
            flops_estimate NUMERIC(40, 0) NOT NULL CHECK (flops_estimate >= 0),
            flops_upper NUMERIC(40, 0) NOT NULL CHECK (flops_upper >= 0),
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL)""",
        # Which nodes and GPUs contributed what to a job.
        """CREATE TABLE job_gpus (
            job_id TEXT COLLATE "C" NOT NULL, key_id TEXT COLLATE "C" NOT NULL,
            gpu_uuid TEXT COLLATE "C" NOT NULL, node_id TEXT COLLATE "C" NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, PRIMARY KEY (job_id, key_id, gpu_uuid))""",
        """CREATE TABLE gaps (
            key_id TEXT COLLATE "C" NOT NULL, sequence BIGINT NOT NULL,
            gpu_uuid TEXT COLLATE "C" NOT NULL, start_ns BIGINT NOT NULL,
            end_ns BIGINT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX gaps_by_record ON gaps (key_id, sequence)",
        # Measured time per device (gpu_key), as disjoint runs joined where they touch.
        """CREATE TABLE coverage (
            gpu TEXT COLLATE "C" NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL,
            CHECK (end_ns > start_ns), PRIMARY KEY (gpu, start_ns))""",
        """CREATE TABLE alerts (
            job_id TEXT COLLATE "C" NOT NULL, threshold NUMERIC(40, 0) NOT NULL,
            basis TEXT NOT NULL, value NUMERIC(40, 0) NOT NULL, at_ns BIGINT NOT NULL,
            next_threshold NUMERIC(40, 0), next_seconds DOUBLE PRECISION,
            PRIMARY KEY (job_id, threshold))""",
        # Node trust: one-time enrollment tokens (by hash), keys awaiting approval.
        """CREATE TABLE enroll_tokens (
            token_hash TEXT COLLATE "C" PRIMARY KEY, node_id TEXT COLLATE "C" NOT NULL,
            created_at_ns BIGINT NOT NULL, expires_at_ns BIGINT NOT NULL, used_at_ns BIGINT,
            used_by_key_id TEXT COLLATE "C")""",
        """CREATE TABLE pending_keys (
            key_id TEXT COLLATE "C" PRIMARY KEY, node_id TEXT COLLATE "C" NOT NULL,
            public_key BYTEA NOT NULL, first_seen_ns BIGINT NOT NULL,
            last_seen_ns BIGINT NOT NULL)""",
        # Whole-device sums per (key, gpu_key).
        """CREATE TABLE gpu_totals (
            key_id TEXT COLLATE "C" NOT NULL, gpu TEXT COLLATE "C" NOT NULL,
            node_id TEXT COLLATE "C" NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, PRIMARY KEY (key_id, gpu))""",
        # Transparency log (flopwatch.collector.store.postgres.tlog): the RFC 6962 hash of every
        # complete subtree (level 0: leaf hashes), the record each leaf holds (and, by its unique
        # index, each record's leaf), leaves by job, signed tree heads, and the log size at each
        # revocation. Every index grows at its right end or near a few hot keys (none on hashes), so
        # appends stay cheap however large the log.
        """CREATE TABLE log_nodes (
            level INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
            PRIMARY KEY (level, idx))""",
        """CREATE TABLE log_leaves (
            leaf_index BIGINT PRIMARY KEY, key_id TEXT COLLATE "C" NOT NULL,
            sequence BIGINT NOT NULL, UNIQUE (key_id, sequence),
            FOREIGN KEY (key_id, sequence) REFERENCES records (key_id, sequence))""",
        """CREATE TABLE log_jobs (
            job_id TEXT COLLATE "C" NOT NULL, leaf_index BIGINT NOT NULL,
            PRIMARY KEY (job_id, leaf_index))""",
        """CREATE TABLE tree_heads (
            tree_size BIGINT PRIMARY KEY, timestamp_ns BIGINT NOT NULL,
            envelope BYTEA NOT NULL)""",
        """CREATE TABLE log_revocations (
            key_id TEXT COLLATE "C" PRIMARY KEY, log_size BIGINT NOT NULL)""",
    ),
    # The log's last published checkpoint per origin (a C2SP signed note with its witnesses'
    # cosignatures), served again after a restart (flopwatch.collector.log.tlog_service).
    (
        """CREATE TABLE published_checkpoints (
            origin TEXT COLLATE "C" PRIMARY KEY, tree_size BIGINT NOT NULL,
            note BYTEA NOT NULL, published_at_ns BIGINT NOT NULL)""",
    ),
    # Clock health (issue 17): the latest record of a key answered retry because its time ends
    # ahead of the collector's clock (how far, when noted), so `nodes list` shows the node
    # unhealthy until one of its records is committed again.
    (
        "ALTER TABLE nodes ADD COLUMN clock_ahead_ns BIGINT",
        "ALTER TABLE nodes ADD COLUMN clock_ahead_at_ns BIGINT",
    ),
    # Runs and accounts (issue 14, flopwatch.collector.store.postgres.runs): GPU time (fs) and
    # GPU board energy (nJ) per job; totals per run (account, run name) and per account, with
    # the set of workload classes seen (flopwatch.runs.CLASS_BIT); per account and UTC day, what
    # the rolling windows add up (days before the kept bound are deleted). Jobs held before
    # this migration become runs of their own, account unknown (their records name no run or
    # account); their GPU time and energy stay in their envelopes.
    (
        """ALTER TABLE job_totals
            ADD COLUMN gpu_time_fs NUMERIC(40, 0) NOT NULL DEFAULT 0,
            ADD COLUMN energy_nj NUMERIC(40, 0) NOT NULL DEFAULT 0""",
        """CREATE TABLE run_totals (
            account TEXT COLLATE "C" NOT NULL, run TEXT COLLATE "C" NOT NULL,
            classes INTEGER NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, gpu_time_fs NUMERIC(40, 0) NOT NULL,
            energy_nj NUMERIC(40, 0) NOT NULL, PRIMARY KEY (account, run))""",
        """CREATE TABLE account_totals (
            account TEXT COLLATE "C" PRIMARY KEY, classes INTEGER NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, gpu_time_fs NUMERIC(40, 0) NOT NULL,
            energy_nj NUMERIC(40, 0) NOT NULL)""",
        """CREATE TABLE account_days (
            account TEXT COLLATE "C" NOT NULL, day INTEGER NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, gpu_time_fs NUMERIC(40, 0) NOT NULL,
            energy_nj NUMERIC(40, 0) NOT NULL, PRIMARY KEY (account, day))""",
        "CREATE INDEX account_days_by_day ON account_days (day)",
        """INSERT INTO run_totals SELECT '', job_id, 1, flops_estimate, flops_upper,
            first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj FROM job_totals""",
        """INSERT INTO account_totals SELECT '', 1, sum(flops_estimate), sum(flops_upper),
            min(first_start_ns), max(last_end_ns), sum(gpu_intervals), sum(gpu_time_fs),
            sum(energy_nj) FROM job_totals HAVING count(*) > 0""",
    ),
    # Thresholds by scope (issue 14, flopwatch.collector.alerts.scopes): alerts of runs and of
    # account windows, crossed or forecast, each recorded once, ever, by its primary key.
    (
        """CREATE TABLE scope_alerts (
            scope TEXT COLLATE "C" NOT NULL, account TEXT COLLATE "C" NOT NULL,
            run TEXT COLLATE "C" NOT NULL, window_days INTEGER NOT NULL,
            kind TEXT NOT NULL, threshold NUMERIC(40, 0) NOT NULL, rule TEXT NOT NULL,
            meaning TEXT NOT NULL, source TEXT NOT NULL, basis TEXT NOT NULL,
            value NUMERIC(40, 0) NOT NULL, at_ns BIGINT NOT NULL, rate DOUBLE PRECISION,
            eta_s DOUBLE PRECISION,
            PRIMARY KEY (scope, account, run, window_days, kind, threshold))""",
    ),
    # Run reports (issue 15, `flopwatch report --run`): log leaves by run (account, run name),
    # as log_jobs indexes them by job; written with the leaf, in the commit that adds the
    # record to the run's totals. Leaves logged before this migration are indexed by
    # `tlog.backfill_runs` in the same transaction (archived, pruned envelopes cannot be).
    (
        """CREATE TABLE log_runs (
            account TEXT COLLATE "C" NOT NULL, run TEXT COLLATE "C" NOT NULL,
            leaf_index BIGINT NOT NULL, PRIMARY KEY (account, run, leaf_index))""",
    ),
    # Run lineage (flopwatch.lineage): one row per declaration, never changed; its signed
    # envelope is also a leaf of the log (log_leaves key_id DECLARATION_KEY_ID, sequence n), so
    # a leaf names a record or a declaration: log_leaves' reference to records goes.
    (
        "ALTER TABLE log_leaves DROP CONSTRAINT IF EXISTS log_leaves_key_id_sequence_fkey",
        """CREATE TABLE run_lineage (
            n BIGINT PRIMARY KEY, account TEXT COLLATE "C" NOT NULL,
            run TEXT COLLATE "C" NOT NULL, class TEXT NOT NULL,
            parent_account TEXT NOT NULL, parent_run TEXT NOT NULL,
            parent_collector TEXT NOT NULL, parent_flops_estimate NUMERIC(40, 0) NOT NULL,
            parent_flops_upper NUMERIC(40, 0) NOT NULL,
            parent_gpu_time_fs NUMERIC(40, 0) NOT NULL, parent_energy_nj NUMERIC(40, 0) NOT NULL,
            declared_at_ns BIGINT NOT NULL, envelope BYTEA NOT NULL, leaf_index BIGINT NOT NULL,
            UNIQUE (account, run))""",
    ),
    # Node key statements (flopwatch.statements.NodeKeyStatement, store/key_rows.py): one row
    # per key and action (enrolled, revoked), never changed; its signed envelope is also a leaf
    # of the log (log_leaves key_id KEY_STATEMENT_KEY_ID, sequence n). Keys enrolled before this
    # migration are logged when the collector next starts (log_missing_key_statements).
    (
        """CREATE TABLE key_statements (
            n BIGINT PRIMARY KEY, key_id TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('enrolled', 'revoked')),
            at_ns BIGINT NOT NULL, envelope BYTEA NOT NULL, leaf_index BIGINT NOT NULL,
            UNIQUE (key_id, action))""",
    ),
    # A run's current rate (forecasts, flopwatch.collector.alerts.scopes): per run and UTC day,
    # the last `RUN_RATE_DAYS` days only (older ones are deleted as account days are). Runs
    # held before this migration have no days: their rate is measured from their next records.
    (
        """CREATE TABLE run_days (
            account TEXT COLLATE "C" NOT NULL, run TEXT COLLATE "C" NOT NULL,
            day INTEGER NOT NULL,
            flops_estimate NUMERIC(40, 0) NOT NULL, flops_upper NUMERIC(40, 0) NOT NULL,
            first_start_ns BIGINT NOT NULL, last_end_ns BIGINT NOT NULL,
            gpu_intervals BIGINT NOT NULL, gpu_time_fs NUMERIC(40, 0) NOT NULL,
            energy_nj NUMERIC(40, 0) NOT NULL, PRIMARY KEY (account, run, day))""",
        "CREATE INDEX run_days_by_day ON run_days (day)",
    ),
    # Sampled reports read figures, not envelopes (flopwatch.collector.sampled_report): each
    # log_jobs and log_runs row also holds the scope's figures in the record for its sum-tree
    # leaf (`flopwatch.sumtree.Sums.to_bytes`, 48 bytes) and the record's FLOP model version,
    # written in the same insert as the row at commit. Rows written before this migration keep
    # NULLs: a report reads those leaves' envelopes, as before (no backfill: it would read
    # every old envelope once at open, the work a report does for them anyway).
    (
        "ALTER TABLE log_jobs ADD COLUMN leaf_sums BYTEA",
        "ALTER TABLE log_jobs ADD COLUMN flop_model_version TEXT",
        "ALTER TABLE log_runs ADD COLUMN leaf_sums BYTEA",
        "ALTER TABLE log_runs ADD COLUMN flop_model_version TEXT",
    ),
)
RUN_LEAVES_VERSION = 6  # the migration that indexed log leaves by run (backfilled at open)
LEAF_FIGURES_VERSION = 10  # the migration that stored sum-tree leaf figures (no backfill)
SCHEMA_VERSION = len(MIGRATIONS)

# Advisory lock (transaction scoped) held while migrating; class 0x666c6f70 spells "flop".
_MIGRATION_LOCK = (0x666C6F70, 1)


def current_version(cur: Any) -> int:
    """The highest version applied, 0 for an empty schema (no schema_version table yet)."""
    cur.execute("SELECT to_regclass(format('%I.schema_version', current_schema())) IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    return int(cur.fetchone()[0])


def migrate(cur: Any) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found. Call inside a transaction.

    Raises StoreError if the database is newer than this collector understands.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATION_LOCK)
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    found = current_version(cur)
    common.migrate(
        MIGRATIONS,
        found,
        cur.execute,
        lambda version: cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,)),
    )
    return found
