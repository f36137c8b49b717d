"""Run lineage: which run a run derives from, and the compute it inherits. Pure.

A run (account, run; flopwatch/runs.py) may be declared derived from one parent: a fine-tuning
run from the pretraining run of its base model, say. The parent is a run this collector holds
(`LocalParent`), or a run another collector holds, then named by that collector's signed run
claim (`ForeignParent`: flopwatch/statements.py RunClaim, carrying the parent's cumulative
totals). A declaration is never changed or withdrawn: a run has at most one parent.

A run's cumulative compute is its own plus its ancestors' (recursively; a foreign parent
counts with the cumulative totals its claim states). A declaration that would close a cycle,
name an unknown parent or chain deeper than `MAX_LINEAGE_DEPTH` is refused with the reason
(`LineageError`).

EU AI Act (guidelines of 2025): whoever modifies a model with more than a third of the original
model's training compute becomes its provider; `derived_over_third` says whether a derived
run's own compute is above a third of its parent's cumulative compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flopwatch.errors import LineageError

RunKey = tuple[str, str]  # (account, run)

# Ancestors followed from one run; a longer chain is refused when declared.
MAX_LINEAGE_DEPTH = 64


@dataclass(frozen=True)
class Compute:
    """FLOPs (estimate, upper bound), GPU time and GPU energy of a run or of its ancestors."""

    flops_estimate: int = 0
    flops_upper: int = 0
    gpu_time_fs: int = 0
    energy_nj: int = 0

    def plus(self, other: Compute) -> Compute:
        return Compute(
            self.flops_estimate + other.flops_estimate,
            self.flops_upper + other.flops_upper,
            self.gpu_time_fs + other.gpu_time_fs,
            self.energy_nj + other.energy_nj,
        )


ZERO = Compute()


@dataclass(frozen=True)
class LocalParent:
    key: RunKey


@dataclass(frozen=True)
class ForeignParent:
    """A run of another collector (key id `collector`), as its verified run claim states it."""

    collector: str
    key: RunKey
    cumulative: Compute


Parent = LocalParent | ForeignParent


@dataclass(frozen=True)
class Lineage:
    """A run's place in the lineage: its parent (None: a root), its own compute, what it
    inherits (its ancestors' cumulative compute) and their sum."""

    key: RunKey
    parent: Parent | None
    ancestors: tuple[RunKey, ...]  # parent first; a foreign ancestor ends the chain
    own: Compute
    inherited: Compute

    @property
    def cumulative(self) -> Compute:
        return self.own.plus(self.inherited)

    @property
    def derived_over_third(self) -> bool:
        return self.parent is not None and derived_over_third(
            self.own.flops_estimate, self.inherited.flops_estimate
        )


def derived_over_third(own_flops: int, parent_cumulative_flops: int) -> bool:
    """Whether a derived run's own compute is above a third of its parent's cumulative compute
    (EU AI Act: such a modifier becomes the model's provider). Exact integer arithmetic."""
    return 3 * own_flops > parent_cumulative_flops


def check_declaration(
    key: RunKey,
    parent: Parent,
    parents: Mapping[RunKey, Parent],
    known: Callable[[RunKey], bool],
) -> None:
    """Refuse (LineageError) a declaration of `key` derived from `parent`, given the parents
    already declared: `key` already has one, the parent is `key` or unknown (`known`: the
    collector holds totals or a declaration of it), or the chain would cycle or be too deep."""
    if key in parents:
        raise LineageError(
            f"run {key[1]!r} of account {key[0]!r} already derives from a parent; a lineage "
            "declaration is never changed",
            "declared",
        )
    if isinstance(parent, ForeignParent):
        return  # its ancestors are the other collector's; its claim states their sum
    if parent.key == key:
        raise LineageError(f"run {key[1]!r} cannot derive from itself (a cycle)", "self")
    if not known(parent.key) and parent.key not in parents:
        raise LineageError(
            f"unknown parent: this collector holds no run {parent.key[1]!r} of account "
            f"{parent.key[0]!r} (for a run of another collector give its signed run claim)",
            "unknown_parent",
        )
    chain = ancestors(parent.key, parents)
    if key in chain:
        raise LineageError(
            f"cycle: run {key[1]!r} is an ancestor of its would-be parent {parent.key[1]!r}",
            "cycle",
        )
    if len(chain) + 1 > MAX_LINEAGE_DEPTH:
        raise LineageError(
            f"the lineage would be more than {MAX_LINEAGE_DEPTH} runs deep", "too_deep"
        )


def ancestors(key: RunKey, parents: Mapping[RunKey, Parent]) -> tuple[RunKey, ...]:
    """`key`'s ancestors, parent first, following at most MAX_LINEAGE_DEPTH + 1 links (a
    cycle, which `check_declaration` never lets in, ends the walk)."""
    out: list[RunKey] = []
    seen = {key}
    parent = parents.get(key)
    while parent is not None and len(out) <= MAX_LINEAGE_DEPTH:
        out.append(parent.key)
        if isinstance(parent, ForeignParent) or parent.key in seen:
            break
        seen.add(parent.key)
        parent = parents.get(parent.key)
    return tuple(out)


def lineage_of(
    key: RunKey, parents: Mapping[RunKey, Parent], own: Callable[[RunKey], Compute]
) -> Lineage:
    """A run's lineage with its own and inherited compute (`own`: a run's own totals, ZERO
    for a run with no records yet)."""
    inherited = ZERO
    parent = parents.get(key)
    link = parent
    seen = {key}
    while link is not None and len(seen) <= MAX_LINEAGE_DEPTH + 1:
        if isinstance(link, ForeignParent):
            inherited = inherited.plus(link.cumulative)
            break
        if link.key in seen:
            break
        seen.add(link.key)
        inherited = inherited.plus(own(link.key))
        link = parents.get(link.key)
    return Lineage(key, parent, ancestors(key, parents), own(key), inherited)
