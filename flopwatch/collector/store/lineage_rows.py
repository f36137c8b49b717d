"""Run lineage in a store: the rows of `run_lineage` (both backends) and what they mean.

A declaration is a row of `run_lineage` and a leaf of the transparency log: its leaf data is the
declaration's signed envelope (payload type RUN_DECLARATION_TYPE), indexed in `log_leaves` under
the key id DECLARATION_KEY_ID (no node key id looks like it: those are hex SHA-256) with the
declaration's number as its sequence, so the log's entries stay "the stored envelope bytes of
each leaf" for records and declarations alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flopwatch.lineage import Compute, ForeignParent, LocalParent, Parent, RunKey

DECLARATION_KEY_ID = "run-declaration"

# What a store's `add_declaration` calls inside its transaction with the parents declared so
# far and whether it holds a run: raises LineageError to refuse.
Check = Callable[[Mapping[RunKey, Parent], Callable[[RunKey], bool]], None]

SELECT_LINEAGE = (
    "SELECT account, run, parent_account, parent_run, parent_collector, "
    "parent_flops_estimate, parent_flops_upper, parent_gpu_time_fs, parent_energy_nj "
    "FROM run_lineage"
)
_COLUMNS = (
    "(n, account, run, class, parent_account, parent_run, parent_collector, "
    "parent_flops_estimate, parent_flops_upper, parent_gpu_time_fs, parent_energy_nj, "
    "declared_at_ns, envelope, leaf_index) "
)
INSERT_SQLITE = "INSERT INTO run_lineage " + _COLUMNS + "VALUES (" + ", ".join(["?"] * 14) + ")"
INSERT_POSTGRES = "INSERT INTO run_lineage " + _COLUMNS + "VALUES (" + ", ".join(["%s"] * 14) + ")"


@dataclass(frozen=True)
class Declaration:
    """A lineage declaration to keep: run `key` of class `workload_class` derives from
    `parent`."""

    key: RunKey
    workload_class: str
    parent: Parent
    declared_at_ns: int

    def values(self, n: int, envelope: bytes, leaf_index: int) -> tuple[Any, ...]:
        """The row, in the INSERT statements' column order (sums as decimal text)."""
        foreign = self.parent if isinstance(self.parent, ForeignParent) else None
        c = foreign.cumulative if foreign else Compute()
        return (
            n,
            *self.key,
            self.workload_class,
            *self.parent.key,
            foreign.collector if foreign else "",
            str(c.flops_estimate),
            str(c.flops_upper),
            str(c.gpu_time_fs),
            str(c.energy_nj),
            self.declared_at_ns,
            envelope,
            leaf_index,
        )


def parents(rows: Iterable[Any]) -> dict[RunKey, Parent]:
    """The parents declared, from SELECT_LINEAGE rows."""
    out: dict[RunKey, Parent] = {}
    for r in rows:
        parent_key = (str(r[2]), str(r[3]))
        if r[4]:
            cumulative = Compute(int(r[5]), int(r[6]), int(r[7]), int(r[8]))
            out[(str(r[0]), str(r[1]))] = ForeignParent(str(r[4]), parent_key, cumulative)
        else:
            out[(str(r[0]), str(r[1]))] = LocalParent(parent_key)
    return out
