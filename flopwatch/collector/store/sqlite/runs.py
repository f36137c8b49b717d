"""SQLite side of run and account totals: added with every committed batch (inside its
transaction, `writes.write_batch`), read a page at a time, and backfilled once from the job
totals held before they existed.

Sums are decimal TEXT, read, added as Python ints and written back (exact past 2^63); a run's
and an account's classes are a bit set, OR-ed. Nothing here commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from flopwatch.collector.store.records import (
    AccountTotal,
    DaysKept,
    JobDelta,
    RunKey,
    RunTotal,
    account_day_sums,
    account_sums,
    first_rate_day,
    recent_of,
    run_day_sums,
    run_sums,
)
from flopwatch.collector.store.rows import (
    SELECT_ACCOUNTS,
    SELECT_RUNS,
    account_total,
    run_total,
    sums,
)
from flopwatch.collector.store.sqlite.matching import keyed, select_matching
from flopwatch.runs import CLASS_BIT, WorkloadClass
from flopwatch.verify.record import VerifiedRecord

Key = tuple[Any, ...]


def _text(d: JobDelta) -> tuple[str, str, int, int, int, str, str]:
    return (
        str(d.flops_estimate),
        str(d.flops_upper),
        d.first_start_ns,
        d.last_end_ns,
        d.gpu_intervals,
        str(d.gpu_time_fs),
        str(d.energy_nj),
    )


class _Table(NamedTuple):
    """The two statements `add_sums` runs on one sum table, its key columns first."""

    keys: int  # key columns
    classes: bool  # a `classes` bit set after the keys
    select: str  # its rows whose key is among {rows}
    insert: str  # a whole row, replacing the held one


_TABLES = {
    "job_totals": _Table(
        1,
        False,
        "SELECT job_id, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM job_totals WHERE job_id IN ({rows})",
        "INSERT OR REPLACE INTO job_totals (job_id, flops_estimate, flops_upper, "
        "first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    "run_totals": _Table(
        2,
        True,
        "WITH w (account, run) AS ({rows}) SELECT t.account, t.run, t.classes, "
        "t.flops_estimate, t.flops_upper, t.first_start_ns, t.last_end_ns, t.gpu_intervals, "
        "t.gpu_time_fs, t.energy_nj FROM w JOIN run_totals t "
        "ON t.account = w.account AND t.run = w.run",
        "INSERT OR REPLACE INTO run_totals (account, run, classes, flops_estimate, flops_upper, "
        "first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    "account_totals": _Table(
        1,
        True,
        "SELECT account, classes, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM account_totals WHERE account IN ({rows})",
        "INSERT OR REPLACE INTO account_totals (account, classes, flops_estimate, flops_upper, "
        "first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    "run_days": _Table(
        3,
        False,
        "WITH w (account, run, day) AS ({rows}) SELECT t.account, t.run, t.day, "
        "t.flops_estimate, t.flops_upper, t.first_start_ns, t.last_end_ns, t.gpu_intervals, "
        "t.gpu_time_fs, t.energy_nj FROM w JOIN run_days t "
        "ON t.account = w.account AND t.run = w.run AND t.day = w.day",
        "INSERT OR REPLACE INTO run_days (account, run, day, flops_estimate, flops_upper, "
        "first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    "account_days": _Table(
        2,
        False,
        "WITH w (account, day) AS ({rows}) SELECT t.account, t.day, t.flops_estimate, "
        "t.flops_upper, t.first_start_ns, t.last_end_ns, t.gpu_intervals, t.gpu_time_fs, "
        "t.energy_nj FROM w JOIN account_days t ON t.account = w.account AND t.day = w.day",
        "INSERT OR REPLACE INTO account_days (account, day, flops_estimate, flops_upper, "
        "first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
}


def add_sums(
    db: sqlite3.Connection,
    table: str,
    deltas: Mapping[Key, JobDelta],
    classes: Mapping[Key, int] | None = None,
) -> None:
    """Add each delta to `table`'s row of its key, inserting it if new; for a table with
    classes, OR each key's bit set (`classes`) into the held one."""
    if not deltas:
        return
    t = _TABLES[table]
    held = {
        tuple(row[: t.keys]): row[t.keys :] for row in select_matching(db, t.select, sorted(deltas))
    }
    rows = []
    for key, delta in deltas.items():
        row = held.get(key)
        bits: tuple[int, ...] = ()
        if t.classes:
            bits = ((0 if classes is None else classes[key]) | (0 if row is None else row[0]),)
            row = None if row is None else row[1:]
        total = delta if row is None else delta.plus(sums(row))
        rows.append((*key, *bits, *_text(total)))
    db.executemany(t.insert, rows)


def add_runs(db: sqlite3.Connection, records: Sequence[VerifiedRecord], days: DaysKept) -> None:
    """The batch's sums per run, per account, per account and UTC day from `days.first_day` on
    (with `days.prune`, older days are deleted first: the kept bound) and per run and UTC day
    (each run's days before its last `RUN_RATE_DAYS` deleted, after its total is added)."""
    runs = run_sums(records)
    add_sums(
        db,
        "run_totals",
        {k: d for k, (_, d) in runs.items()},
        {k: c for k, (c, _) in runs.items()},
    )
    accounts = account_sums(runs)
    add_sums(
        db,
        "account_totals",
        {(a,): d for a, (_, d) in accounts.items()},
        {(a,): c for a, (c, _) in accounts.items()},
    )
    if days.prune:
        db.execute("DELETE FROM account_days WHERE day < ?", (days.first_day,))
    add_sums(db, "account_days", account_day_sums(records, days.first_day))
    add_sums(db, "run_days", run_day_sums(records))
    db.executemany(
        "DELETE FROM run_days WHERE account = ? AND run = ? AND day < ?",
        [(a, r, first_rate_day(end)) for (a, r), end in _last_ends(db, runs).items()],
    )


def _last_ends(db: sqlite3.Connection, keys: Collection[RunKey]) -> dict[RunKey, int]:
    """The last end (ns) of each run held among `keys`."""
    rows = select_matching(
        db,
        "WITH w (account, run) AS ({rows}) SELECT t.account, t.run, t.last_end_ns FROM w "
        "JOIN run_totals t ON t.account = w.account AND t.run = w.run",
        sorted(keys),
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}


def run_recent(db: sqlite3.Connection, keys: Collection[RunKey]) -> dict[RunKey, JobDelta]:
    """Each run's sums over its last `RUN_RATE_DAYS` UTC days of measurement (zeros where none
    are held; runs not held are left out). Per-run days older than that are not kept, so this
    reads a few rows per run."""
    wanted = sorted(set(keys))
    rows = select_matching(
        db,
        "WITH w (account, run) AS ({rows}) SELECT t.account, t.run, t.day, t.flops_estimate, "
        "t.flops_upper, t.first_start_ns, t.last_end_ns, t.gpu_intervals, t.gpu_time_fs, "
        "t.energy_nj FROM w JOIN run_days t ON t.account = w.account AND t.run = w.run",
        wanted,
    )
    return recent_of([((r[0], r[1]), int(r[2]), sums(r[3:])) for r in rows], _last_ends(db, wanted))


def run_page(
    db: sqlite3.Connection, account: str | None, prefix: str, after: tuple[str, str], limit: int
) -> list[RunTotal]:
    where = " WHERE (account, run) > (?, ?) AND substr(run, 1, ?) = ?"
    args: list[Any] = [*after, len(prefix), prefix]
    if account is not None:
        where += " AND account = ? AND run >= ?"
        args += [account, prefix]
    rows = db.execute(SELECT_RUNS + where + " ORDER BY account, run LIMIT ?", (*args, limit))
    return [run_total(r) for r in rows]


def runs_among(db: sqlite3.Connection, keys: Collection[RunKey]) -> list[RunTotal]:
    """The totals of the runs held among `keys` (the same columns as `SELECT_RUNS`)."""
    return [run_total(r) for r in select_matching(db, _TABLES["run_totals"].select, sorted(keys))]


def run_total_of(db: sqlite3.Connection, account: str, run: str) -> RunTotal | None:
    row = db.execute(SELECT_RUNS + " WHERE account = ? AND run = ?", (account, run)).fetchone()
    return None if row is None else run_total(row)


def account_page(
    db: sqlite3.Connection, prefix: str, after: str | None, limit: int
) -> list[AccountTotal]:
    """After `after` (None: from the first account, "" included)."""
    rows = db.execute(
        SELECT_ACCOUNTS + " WHERE account >= ? AND (? IS NULL OR account > ?) "
        "AND substr(account, 1, ?) = ? ORDER BY account LIMIT ?",
        (prefix, after, after, len(prefix), prefix, limit),
    ).fetchall()
    counts = dict(
        select_matching(
            db,
            "SELECT account, count(*) FROM run_totals WHERE account IN ({rows}) GROUP BY account",
            keyed([r[0] for r in rows]),
        )
    )
    return [account_total(r, int(counts.get(r[0], 0))) for r in rows]


def account_days(
    db: sqlite3.Connection, accounts: Collection[str], first_day: int
) -> list[tuple[str, int, JobDelta]]:
    rows = select_matching(
        db,
        "SELECT account, day, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM account_days WHERE account IN ({rows})",
        keyed(accounts),
    )
    return [(r[0], int(r[1]), sums(r[2:])) for r in rows if int(r[1]) >= first_day]


def backfill(db: sqlite3.Connection) -> None:
    """Jobs held before run totals existed, as runs of their own with no account (their
    records name neither), and the one account "" they add up to. GPU time and energy were
    not summed then: they stay 0 here as in the jobs' totals."""
    rows = db.execute(
        "SELECT job_id, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM job_totals"
    ).fetchall()
    if not rows:
        return
    unknown = CLASS_BIT[WorkloadClass.UNKNOWN]
    runs = {("", r[0]): sums(r[1:]) for r in rows}
    add_sums(db, "run_totals", runs, dict.fromkeys(runs, unknown))
    total = None
    for d in runs.values():
        total = d if total is None else total.plus(d)
    assert total is not None
    add_sums(db, "account_totals", {("",): total}, {("",): unknown})
