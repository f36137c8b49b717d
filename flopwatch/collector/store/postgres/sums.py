"""Adding sums in place on PostgreSQL: the one upsert every sum table uses.

`SET x = x + delta` under the row lock the upsert takes: collectors adding to the same row take
turns and each adds to the committed value, so no update is lost and nothing is read and written
back. Rows are written in sorted key order, so two writers never wait for each other's rows in
opposite orders. A set of workload classes (`flopwatch.runs.CLASS_BIT`) is OR-ed in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import sql

from flopwatch.collector.store.postgres.locks import Cur
from flopwatch.collector.store.records import JobDelta

_SUMS = ("flops_estimate", "flops_upper", "first_start_ns", "last_end_ns", "gpu_intervals")
_ENERGY = ("gpu_time_fs", "energy_nj")
_ADD = (
    "flops_estimate = t.flops_estimate + excluded.flops_estimate, "
    "flops_upper = t.flops_upper + excluded.flops_upper, "
    "first_start_ns = least(t.first_start_ns, excluded.first_start_ns), "
    "last_end_ns = greatest(t.last_end_ns, excluded.last_end_ns), "
    "gpu_intervals = t.gpu_intervals + excluded.gpu_intervals"
)
_ADD_ENERGY = (
    ", gpu_time_fs = t.gpu_time_fs + excluded.gpu_time_fs, "
    "energy_nj = t.energy_nj + excluded.energy_nj"
)


def add_sums(
    cur: Cur,
    table: str,
    keys: Sequence[str],
    rows: Iterable[tuple[tuple[object, ...], JobDelta]],
    *,
    extra: Sequence[str] = (),
    ored: Sequence[str] = (),
    energy: bool = False,
) -> None:
    """Add each row's delta to `table`'s row of that key (inserting it if new).

    `keys` name the primary-key columns; a row is (key values + `extra` column values + `ored`
    column values, delta); `extra` columns are written on insert only, `ored` ones OR-ed into
    the held value. With `energy`, GPU time and energy are added too (tables that have them).
    """
    sums = (*_SUMS, *_ENERGY) if energy else _SUMS
    columns = [*keys, *extra, *ored, *sums]
    ors = [sql.SQL("{c} = t.{c} | excluded.{c}").format(c=sql.Identifier(c)) for c in ored]
    add = sql.SQL(", ").join([sql.SQL(_ADD + (_ADD_ENERGY if energy else "")), *ors])
    statement = sql.SQL(
        "INSERT INTO {table} AS t ({columns}) VALUES ({values}) "
        "ON CONFLICT ({keys}) DO UPDATE SET {add}"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
        add=add,
    )
    cur.executemany(
        statement,
        [
            (*values, *d[: len(sums)])
            for values, d in sorted(rows, key=lambda row: row[0][: len(keys)])
        ],
    )
