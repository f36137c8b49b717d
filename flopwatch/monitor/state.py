"""The monitor's own SQLite state: per log the kept checkpoint and the position reached, and
everything counted across logs (chains, GPU time covered, totals, alerts and problems).

`commit` writes a ledger batch and the log's new position (and kept checkpoint) in ONE
transaction, so after a crash or restart the monitor resumes exactly where its totals stand:
nothing is counted twice, nothing skipped. Alerts and problems are keyed so each is recorded
once, ever; `commit` returns the ones new in this transaction (the ones to notify). Sizes and
FLOP figures are decimal text (uint64 sizes and FLOP sums pass SQLite's signed integers).
synchronous=FULL; one monitor per state file (a lock file beside it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flopwatch.errors import ConfigError, StoreError
from flopwatch.lockfile import HeldLock, hold
from flopwatch.merkle import EMPTY_ROOT, HASH_SIZE
from flopwatch.monitor.checkpoints import Kept
from flopwatch.monitor.events import Alert, Problem
from flopwatch.monitor.ledger import Batch, Held
from flopwatch.monitor.node_keys import LogKey
from flopwatch.monitor.totals import Figures, TotalKey

SCHEMA_VERSION = 3
_SCHEMA = (
    """CREATE TABLE logs (name TEXT PRIMARY KEY, origin TEXT NOT NULL,
        kept_size TEXT NOT NULL, kept_root BLOB NOT NULL, kept_note BLOB NOT NULL,
        position TEXT NOT NULL)""",
    """CREATE TABLE records (key_id TEXT NOT NULL, sequence INTEGER NOT NULL,
        digest BLOB NOT NULL, previous_digest BLOB NOT NULL, log TEXT NOT NULL,
        leaf TEXT NOT NULL, PRIMARY KEY (key_id, sequence)) WITHOUT ROWID""",
    """CREATE TABLE coverage (gpu TEXT NOT NULL, start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL, PRIMARY KEY (gpu, start_ns)) WITHOUT ROWID""",
    """CREATE TABLE totals (kind TEXT NOT NULL, key TEXT NOT NULL,
        flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
        gpu_intervals INTEGER NOT NULL, first_start_ns INTEGER NOT NULL,
        last_end_ns INTEGER NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID""",
    """CREATE TABLE alerts (threshold TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        value TEXT NOT NULL, at_ns INTEGER NOT NULL,
        PRIMARY KEY (threshold, kind, key)) WITHOUT ROWID""",
    """CREATE TABLE problems (log TEXT NOT NULL, reason TEXT NOT NULL, subject TEXT NOT NULL,
        detail TEXT NOT NULL, at_ns INTEGER NOT NULL,
        PRIMARY KEY (log, reason, subject)) WITHOUT ROWID""",
)
# Per version, what brings the one before it there (appended; never changed).
_MIGRATIONS = {
    # Node keys each log enrolled and revoked (flopwatch.monitor.node_keys), as its key
    # statements said up to the log's position.
    2: (
        """CREATE TABLE log_keys (log TEXT NOT NULL, key_id TEXT NOT NULL,
            public_key BLOB NOT NULL, node_id TEXT NOT NULL, enrolled_leaf TEXT NOT NULL,
            revoked_leaf TEXT, revoked_from TEXT, PRIMARY KEY (log, key_id)) WITHOUT ROWID""",
    ),
    # Rolling windows (flopwatch.monitor.windows): per account and entity, per UTC day.
    3: (
        """CREATE TABLE day_totals (kind TEXT NOT NULL, key TEXT NOT NULL, day INTEGER NOT NULL,
            flops_estimate TEXT NOT NULL, flops_upper TEXT NOT NULL,
            gpu_intervals INTEGER NOT NULL, first_start_ns INTEGER NOT NULL,
            last_end_ns INTEGER NOT NULL, PRIMARY KEY (kind, key, day)) WITHOUT ROWID""",
    ),
}


def _int(text: object, what: str) -> int:
    if not isinstance(text, str) or not text.isdigit():
        raise StoreError(f"the monitor state is damaged: {what} is {str(text)[:40]!r}")
    return int(text)


class MonitorState:
    def __init__(self, path: Path) -> None:
        self._lock: HeldLock | None = hold(
            path.with_name(path.name + ".lock"),
            f"monitor state {path}",
            hint="one monitor per state file",
        )
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_mode=WAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                with self._transaction():
                    for statement in _SCHEMA:
                        self._db.execute(statement)
                    for v in sorted(_MIGRATIONS):
                        for statement in _MIGRATIONS[v]:
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version < SCHEMA_VERSION:
                with self._transaction():
                    for v in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in _MIGRATIONS[v]:
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise ConfigError(
                    f"{path} is monitor state version {version}, not {SCHEMA_VERSION}"
                )
            self._db.execute("SELECT kept_size FROM logs LIMIT 1").fetchall()
        except sqlite3.Error as e:
            self.close()
            raise ConfigError(f"cannot open the monitor state {path}: {e}") from e
        except ConfigError:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reads ------------------------------------------------------------------------------
    def log_state(self, name: str, origin: str) -> tuple[Kept, int]:
        """The kept checkpoint and position of log `name` (none yet: size 0, position 0)."""
        try:
            row = self._db.execute(
                "SELECT origin, kept_size, kept_root, kept_note, position FROM logs WHERE name = ?",
                (name,),
            ).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the monitor state: {e}") from e
        if row is None:
            return Kept(0, EMPTY_ROOT), 0
        if row[0] != origin:
            raise ConfigError(
                f"log {name!r} is followed in this state as origin {row[0]!r}, not {origin!r}: "
                "give it another name, or use another state file"
            )
        kept = Kept(_int(row[1], "a kept size"), bytes(row[2]), bytes(row[3]))
        position = _int(row[4], "a position")
        if len(kept.root) != HASH_SIZE or position > kept.size:
            raise StoreError(f"the monitor state of log {name!r} is damaged")
        return kept, position

    def lookup(self, key_id: str, first: int, last: int) -> dict[int, Held]:
        rows = self._db.execute(
            "SELECT sequence, digest, previous_digest, log, leaf FROM records "
            "WHERE key_id = ? AND sequence BETWEEN ? AND ?",
            (key_id, first, last),
        ).fetchall()
        return {
            int(s): Held(bytes(d), bytes(p), str(log), _int(leaf, "a leaf"))
            for s, d, p, log, leaf in rows
        }

    def log_keys(self, log: str) -> dict[str, LogKey]:
        """The node keys log `log` enrolled (and revoked), as learnt up to its position."""
        try:
            rows = self._db.execute(
                "SELECT key_id, public_key, node_id, enrolled_leaf, revoked_leaf, revoked_from "
                "FROM log_keys WHERE log = ?",
                (log,),
            ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the monitor state: {e}") from e
        return {
            str(k): LogKey(
                str(k),
                bytes(pk),
                str(node),
                _int(enrolled, "a leaf"),
                None if revoked is None else _int(revoked, "a leaf"),
                None if since is None else _int(since, "a log size"),
            )
            for k, pk, node, enrolled, revoked, since in rows
        }

    def leaves_of(self, log: str, key_id: str) -> list[int]:
        """Leaves of log `log` whose records of `key_id` were counted."""
        rows = self._db.execute(
            "SELECT leaf FROM records WHERE key_id = ? AND log = ?", (key_id, log)
        ).fetchall()
        return [_int(leaf, "a leaf") for (leaf,) in rows]

    def coverage(self) -> list[tuple[str, int, int]]:
        return [
            (str(g), int(s), int(e))
            for g, s, e in self._db.execute("SELECT gpu, start_ns, end_ns FROM coverage")
        ]

    def totals(self) -> dict[TotalKey, Figures]:
        out = {}
        for kind, key, est, upper, n, first, last in self._db.execute(
            "SELECT kind, key, flops_estimate, flops_upper, gpu_intervals, first_start_ns, "
            "last_end_ns FROM totals"
        ):
            out[(str(kind), str(key))] = Figures(
                _int(est, "a total"), _int(upper, "a total"), int(n), int(first), int(last)
            )
        return out

    def days(self) -> dict[tuple[str, str], dict[int, Figures]]:
        """The rolling windows' day buckets: (kind, key) -> UTC day -> figures."""
        out: dict[tuple[str, str], dict[int, Figures]] = {}
        for kind, key, day, est, upper, n, first, last in self._db.execute(
            "SELECT kind, key, day, flops_estimate, flops_upper, gpu_intervals, first_start_ns, "
            "last_end_ns FROM day_totals"
        ):
            out.setdefault((str(kind), str(key)), {})[int(day)] = Figures(
                _int(est, "a day total"), _int(upper, "a day total"), int(n), int(first), int(last)
            )
        return out

    def fired(self) -> set[tuple[str, str, str]]:
        return {
            (str(t), str(k), str(key))
            for t, k, key in self._db.execute("SELECT threshold, kind, key FROM alerts")
        }

    def problems(self) -> list[Problem]:
        return [
            Problem(str(log), str(reason), str(subject), str(detail))
            for log, reason, subject, detail in self._db.execute(
                "SELECT log, reason, subject, detail FROM problems ORDER BY at_ns, log"
            )
        ]

    def positions(self) -> dict[str, tuple[int, int]]:
        """Per log: (kept size, position)."""
        return {
            str(n): (_int(k, "a kept size"), _int(p, "a position"))
            for n, k, p in self._db.execute("SELECT name, kept_size, position FROM logs")
        }

    # -- writes -----------------------------------------------------------------------------
    def commit(
        self,
        log: str,
        origin: str,
        *,
        batch: Batch,
        position: int | None = None,
        kept: Kept | None = None,
        now_ns: int,
    ) -> tuple[list[Problem], list[Alert]]:
        """Write `batch` and, if given, the log's new position and kept checkpoint, atomically.
        Returns the problems and alerts recorded for the first time."""
        db = self._db
        new_problems: list[Problem] = []
        new_alerts: list[Alert] = []
        try:
            with self._transaction():
                if kept is not None or position is not None:
                    db.execute(
                        "INSERT INTO logs (name, origin, kept_size, kept_root, kept_note, "
                        "position) VALUES (?, ?, '0', ?, x'', '0') ON CONFLICT (name) DO NOTHING",
                        (log, origin, EMPTY_ROOT),
                    )
                if kept is not None:
                    db.execute(
                        "UPDATE logs SET kept_size = ?, kept_root = ?, kept_note = ? "
                        "WHERE name = ?",
                        (str(kept.size), kept.root, kept.note, log),
                    )
                if position is not None:
                    db.execute("UPDATE logs SET position = ? WHERE name = ?", (str(position), log))
                db.executemany(
                    "INSERT INTO records (key_id, sequence, digest, previous_digest, log, leaf) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (k, s, h.digest, h.previous_digest, h.log, str(h.leaf))
                        for k, s, h in batch.records
                    ],
                )
                for change in batch.coverage:
                    db.executemany(
                        "DELETE FROM coverage WHERE gpu = ? AND start_ns = ?",
                        [(change.gpu, s) for s, _ in change.removed],
                    )
                    db.executemany(
                        "INSERT INTO coverage (gpu, start_ns, end_ns) VALUES (?, ?, ?)",
                        [(change.gpu, s, e) for s, e in change.added],
                    )
                db.executemany(
                    "INSERT INTO totals (kind, key, flops_estimate, flops_upper, gpu_intervals, "
                    "first_start_ns, last_end_ns) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET "
                    "flops_estimate = excluded.flops_estimate, "
                    "flops_upper = excluded.flops_upper, gpu_intervals = excluded.gpu_intervals, "
                    "first_start_ns = excluded.first_start_ns, last_end_ns = excluded.last_end_ns",
                    [
                        (
                            kind,
                            key,
                            str(f.flops_estimate),
                            str(f.flops_upper),
                            f.gpu_intervals,
                            f.first_start_ns,
                            f.last_end_ns,
                        )
                        for (kind, key), f in batch.totals.items()
                    ],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO log_keys (log, key_id, public_key, node_id, "
                    "enrolled_leaf, revoked_leaf, revoked_from) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            name,
                            k.key_id,
                            k.public_key,
                            k.node_id,
                            str(k.enrolled_leaf),
                            None if k.revoked_leaf is None else str(k.revoked_leaf),
                            None if k.revoked_from is None else str(k.revoked_from),
                        )
                        for name, k in batch.keys
                    ],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO day_totals (kind, key, day, flops_estimate, "
                    "flops_upper, gpu_intervals, first_start_ns, last_end_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            kind,
                            key,
                            day,
                            str(f.flops_estimate),
                            str(f.flops_upper),
                            f.gpu_intervals,
                            f.first_start_ns,
                            f.last_end_ns,
                        )
                        for (kind, key, day), f in sorted(batch.days.items())
                    ],
                )
                if batch.prune_before is not None:
                    db.execute("DELETE FROM day_totals WHERE day < ?", (batch.prune_before,))
                for a in batch.alerts:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO alerts (threshold, kind, key, value, at_ns) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (a.threshold, a.kind, a.key, str(a.value), now_ns),
                    )
                    if cur.rowcount:
                        new_alerts.append(a)
                for p in batch.problems:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO problems (log, reason, subject, detail, at_ns) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (p.log, p.reason, p.subject, p.detail, now_ns),
                    )
                    if cur.rowcount:
                        new_problems.append(p)
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the monitor state: {e}") from e
        return new_problems, new_alerts
