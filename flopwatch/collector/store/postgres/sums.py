"""Adding FLOP sums in place on PostgreSQL: the one upsert every sum table uses.

`SET x = x + delta` under the row lock the upsert takes: collectors adding to the same row take
turns and each adds to the committed value, so no update is lost and nothing is read and written
back. Rows are written in sorted key order, so two writers never wait for each other's rows in
opposite orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import sql

from flopwatch.collector.store.postgres.locks import Cur
from flopwatch.collector.store.records import JobDelta

_SUMS = ("flops_estimate", "flops_upper", "first_start_ns", "last_end_ns", "gpu_intervals")
_ADD = sql.SQL(
    "flops_estimate = t.flops_estimate + excluded.flops_estimate, "
    "flops_upper = t.flops_upper + excluded.flops_upper, "
    "first_start_ns = least(t.first_start_ns, excluded.first_start_ns), "
    "last_end_ns = greatest(t.last_end_ns, excluded.last_end_ns), "
    "gpu_intervals = t.gpu_intervals + excluded.gpu_intervals"
)


def add_sums(
    cur: Cur,
    table: str,
    keys: Sequence[str],
    rows: Iterable[tuple[tuple[str, ...], JobDelta]],
    *,
    extra: Sequence[str] = (),
) -> None:
    """Add each row's delta to `table`'s row of that key (inserting it if new).

    `keys` name the primary-key columns; a row is (key values + `extra` column values, delta);
    `extra` columns are written on insert only.
    """
    columns = [*keys, *extra, *_SUMS]
    statement = sql.SQL(
        "INSERT INTO {table} AS t ({columns}) VALUES ({values}) "
        "ON CONFLICT ({keys}) DO UPDATE SET {add}"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
        add=_ADD,
    )
    cur.executemany(
        statement,
        [
            (
                *values,
                d.flops_estimate,
                d.flops_upper,
                d.first_start_ns,
                d.last_end_ns,
                d.gpu_intervals,
            )
            for values, d in sorted(rows, key=lambda row: row[0])
        ],
    )
