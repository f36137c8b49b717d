"""PostgreSQL side of run and account totals: added in place with every committed batch
(inside its transaction, `writes.write_batch`), and read a page at a time.

Sums are added with `x = x + delta` under the row lock the upsert takes (`sums.add_sums`), and
the classes OR-ed, so collectors adding to one run or account take turns and lose nothing. The
tables are written in a fixed order (runs, accounts, days), each in key order: two writers
never wait for each other in opposite orders. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from flopwatch.collector.store.postgres.locks import Cur
from flopwatch.collector.store.postgres.sums import add_sums
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
from flopwatch.verify.record import VerifiedRecord


def add_runs(cur: Cur, records: Sequence[VerifiedRecord], days: DaysKept) -> None:
    """The batch's sums per run, per account, per account and UTC day from `days.first_day` on
    and per run and UTC day from `days.first_run_day` on; with `days.prune`, older days are
    deleted first (the kept bounds)."""
    runs = run_sums(records)
    add_sums(
        cur,
        "run_totals",
        ["account", "run"],
        [((*key, bits), d) for key, (bits, d) in runs.items()],
        ored=["classes"],
        energy=True,
    )
    add_sums(
        cur,
        "account_totals",
        ["account"],
        [((account, bits), d) for account, (bits, d) in account_sums(runs).items()],
        ored=["classes"],
        energy=True,
    )
    if days.prune:
        cur.execute("DELETE FROM account_days WHERE day < %s", (days.first_day,))
    add_sums(
        cur,
        "account_days",
        ["account", "day"],
        list(account_day_sums(records, days.first_day).items()),
        energy=True,
    )
    add_sums(
        cur,
        "run_days",
        ["account", "run", "day"],
        list(run_day_sums(records).items()),
        energy=True,
    )
    # Each run's days before its last RUN_RATE_DAYS, its total's last end now added.
    firsts = [(a, r, first_rate_day(end)) for (a, r), end in _last_ends(cur, runs).items()]
    cur.execute(
        "DELETE FROM run_days d USING unnest(%s::text[], %s::text[], %s::integer[]) "
        "AS w (account, run, first) "
        "WHERE d.account = w.account AND d.run = w.run AND d.day < w.first",
        ([f[0] for f in firsts], [f[1] for f in firsts], [f[2] for f in firsts]),
    )


def _last_ends(cur: Cur, keys: Collection[RunKey]) -> dict[RunKey, int]:
    """The last end (ns) of each run held among `keys`."""
    wanted = sorted(keys)
    cur.execute(
        "SELECT t.account, t.run, t.last_end_ns FROM run_totals t "
        "JOIN unnest(%s::text[], %s::text[]) AS w (account, run) "
        "ON t.account = w.account AND t.run = w.run",
        ([k[0] for k in wanted], [k[1] for k in wanted]),
    )
    return {(r[0], r[1]): int(r[2]) for r in cur.fetchall()}


def run_recent(cur: Cur, keys: Collection[RunKey]) -> dict[RunKey, JobDelta]:
    """Each run's sums over its last `RUN_RATE_DAYS` UTC days of measurement (zeros where none
    are held; runs not held are left out). Per-run days older than that are not kept, so this
    reads a few rows per run."""
    wanted = sorted(set(keys))
    accounts, names = [k[0] for k in wanted], [k[1] for k in wanted]
    last = _last_ends(cur, wanted)
    cur.execute(
        "SELECT d.account, d.run, d.day, d.flops_estimate, d.flops_upper, d.first_start_ns, "
        "d.last_end_ns, d.gpu_intervals, d.gpu_time_fs, d.energy_nj FROM run_days d "
        "JOIN unnest(%s::text[], %s::text[]) AS w (account, run) "
        "ON d.account = w.account AND d.run = w.run",
        (accounts, names),
    )
    rows = [((r[0], r[1]), int(r[2]), sums(r[3:])) for r in cur.fetchall()]
    return recent_of(rows, last)


def run_page(
    cur: Cur, account: str | None, prefix: str, after: tuple[str, str], limit: int
) -> list[RunTotal]:
    where = " WHERE (account, run) > (%(a)s, %(r)s) AND starts_with(run, %(p)s)"
    if account is not None:
        where += " AND account = %(account)s AND run >= %(p)s"
    cur.execute(
        SELECT_RUNS + where + " ORDER BY account, run LIMIT %(limit)s",
        {"a": after[0], "r": after[1], "p": prefix, "account": account, "limit": limit},
    )
    return [run_total(r) for r in cur.fetchall()]


def run_total_of(cur: Cur, account: str, run: str) -> RunTotal | None:
    cur.execute(SELECT_RUNS + " WHERE account = %s AND run = %s", (account, run))
    row = cur.fetchone()
    return None if row is None else run_total(row)


def account_page(cur: Cur, prefix: str, after: str | None, limit: int) -> list[AccountTotal]:
    cur.execute(
        SELECT_ACCOUNTS + " WHERE account >= %(p)s "
        "AND (%(after)s::text IS NULL OR account > %(after)s) "
        "AND starts_with(account, %(p)s) ORDER BY account LIMIT %(limit)s",
        {"p": prefix, "after": after, "limit": limit},
    )
    rows = cur.fetchall()
    cur.execute(
        "SELECT account, count(*) FROM run_totals WHERE account = ANY(%s) GROUP BY account",
        ([r[0] for r in rows],),
    )
    counts: dict[Any, Any] = dict(cur.fetchall())
    return [account_total(r, int(counts.get(r[0], 0))) for r in rows]


def account_days(
    cur: Cur, accounts: Collection[str], first_day: int
) -> list[tuple[str, int, JobDelta]]:
    cur.execute(
        "SELECT account, day, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
        "gpu_intervals, gpu_time_fs, energy_nj FROM account_days "
        "WHERE account = ANY(%s) AND day >= %s",
        (sorted(accounts), first_day),
    )
    return [(r[0], int(r[1]), sums(r[2:])) for r in cur.fetchall()]
