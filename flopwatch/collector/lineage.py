"""Run lineage at the collector: declare a run derived from a parent, export a run's signed
claim, and read a run's lineage with its cumulative compute (flopwatch.lineage does the
arithmetic, flopwatch.statements the signed statements).

A declaration is checked (run names, class, the parent known, no cycle, not declared before),
signed by the collector key as a RUN_DECLARATION_TYPE envelope, kept in the store and appended
to the transparency log in one transaction. A parent held by another collector is named by that
collector's run claim, verified against its key (pinned by the operator); the claim travels
inside the declaration, so the log carries the evidence of the compute inherited.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.lineage_rows import Declaration
from flopwatch.dsse import Envelope
from flopwatch.errors import LineageError
from flopwatch.keys import SigningKey
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.lineage import (
    ZERO,
    Compute,
    ForeignParent,
    Lineage,
    LocalParent,
    Parent,
    RunKey,
    check_declaration,
    lineage_of,
)
from flopwatch.runs import WorkloadClass, declared_run_problem, label_problem
from flopwatch.statements import DECLARED_BY_OPERATOR, RunClaim, RunDeclaration


@dataclass(frozen=True)
class Declared:
    leaf_index: int
    envelope: Envelope


@dataclass(frozen=True)
class Provenance:
    """Whose word a run's lineage declaration is, as the stored declaration says it
    (flopwatch.statements.RunDeclaration): `declared_by` "operator" or "workload", then with
    the node key id and sequence of the record that named the parent."""

    leaf_index: int
    declared_by: str
    record_key_id: str = ""
    record_sequence: int = 0


def provenance(store: Store, key: RunKey) -> Provenance | None:
    """Who declared `key`'s lineage, read from its declaration in the store's log (the
    collector's own database: read, not verified again); None for a run declared by nobody."""
    leaf = store.declaration_leaf(key)
    if leaf is None:
        return None
    [entry] = store.log_entries(leaf, leaf + 1)
    try:
        fields = json.loads(Envelope.from_bytes(entry).payload)
    except ValueError as e:  # VerificationError too: only the collector writes these
        raise LineageError(f"the declaration at leaf {leaf} cannot be read: {e}") from e
    by = fields.get("declared_by", DECLARED_BY_OPERATOR)
    key_id, sequence = fields.get("record_key_id", ""), fields.get("record_sequence", 0)
    if not (isinstance(by, str) and isinstance(key_id, str) and isinstance(sequence, int)):
        raise LineageError(f"the declaration at leaf {leaf} is not shaped as declarations are")
    return Provenance(leaf, by, key_id, sequence)


def own_compute(store: Store, key: RunKey) -> Compute:
    """A run's own totals; ZERO for a run the collector holds no record of."""
    for r in store.run_page(key[0], key[1], ("", ""), 2):
        if (r.account, r.run) == key:
            return Compute(r.flops_estimate, r.flops_upper, r.gpu_time_fs, r.energy_nj)
    return ZERO


def lineage(store: Store, key: RunKey) -> Lineage:
    """A run's parent, ancestors, own, inherited and cumulative compute."""
    return lineage_of(key, store.lineage_parents(), lambda k: own_compute(store, k))


def parent_compute(
    store: Store, parents: Mapping[RunKey, Parent] | None = None
) -> Callable[[str, str], Compute | None]:
    """The `flopwatch.collector.alerts.scopes.ParentCompute` of the store's lineage: a run's
    parent's cumulative compute (what the run inherits), or None for a run with no parent.
    The declarations are `parents` where the caller keeps them (the ingestor's
    `WorkloadParents.lineage`), else read once, here; each answer reads the ancestors'
    totals."""
    if parents is None:
        parents = store.lineage_parents()

    def parent_of(account: str, run: str) -> Compute | None:
        key = (account, run)
        if key not in parents:
            return None
        return lineage_of(key, parents, lambda k: own_compute(store, k)).inherited

    return parent_of


def derived_over_third(store: Store, key: RunKey) -> bool:
    """Whether `key` derives from a parent and its own compute is above a third of the parent's
    cumulative compute (EU AI Act: the modifier becomes the model's provider)."""
    return lineage(store, key).derived_over_third


def _check_names(key: RunKey, parent: RunKey | None) -> None:
    chars = DEFAULT_LIMITS.max_identifier_chars
    problems = [
        ("account", label_problem(key[0], chars)),
        ("run", declared_run_problem(key[1], chars) if key[1] else "is empty"),
    ]
    if parent is not None:
        problems += [
            ("parent account", label_problem(parent[0], chars)),
            ("parent run", label_problem(parent[1], chars) if parent[1] else "is empty"),
        ]
    for what, problem in problems:
        if problem is not None:
            raise LineageError(f"{what} {problem}")


def declare(
    store: Store,
    key: SigningKey,
    run: RunKey,
    workload_class: WorkloadClass,
    now_ns: int,
    *,
    parent: RunKey | None = None,
    claim: bytes | None = None,
    claim_key: Ed25519PublicKey | None = None,
    declared_by: str = DECLARED_BY_OPERATOR,
    record: tuple[str, int] = ("", 0),
) -> Declared:
    """Declare `run` derived from the local run `parent`, or from the foreign run of `claim`
    (a run claim file, verified against `claim_key`). Raises LineageError with the reason, or
    VerificationError(bad_run_claim) for a claim that does not verify.

    `declared_by` says whose word it is (flopwatch.statements: the operator's, or the
    workload's, then `record` is the node key id and sequence of the record naming the
    parent); both are signed into the declaration."""
    link: Parent
    if claim is not None:
        if claim_key is None:
            raise LineageError("a foreign parent's run claim needs its collector's key")
        c = RunClaim.verified(claim, claim_key)
        if c.collector_key_id == key.key_id:
            raise LineageError("the run claim is this collector's own: name the parent run")
        _check_names(run, (c.account, c.run))
        cumulative = Compute(c.flops_estimate, c.flops_upper, c.gpu_time_fs, c.energy_nj)
        link = ForeignParent(c.collector_key_id, (c.account, c.run), cumulative)
    elif parent is not None:
        _check_names(run, parent)
        link = LocalParent(parent)
    else:
        raise LineageError("a lineage declaration names a parent run or a run claim")
    statement = RunDeclaration(
        account=run[0],
        run=run[1],
        workload_class=workload_class.value,
        parent_account=link.key[0],
        parent_run=link.key[1],
        declared_at_ns=now_ns,
        parent_collector=link.collector if isinstance(link, ForeignParent) else "",
        parent_claim=claim or b"",
        declared_by=declared_by,
        record_key_id=record[0],
        record_sequence=record[1],
    )
    envelope = statement.sign(key)
    decl = Declaration(run, workload_class.value, link, now_ns)
    leaf = store.add_declaration(
        decl,
        envelope.to_bytes(),
        lambda parents, known: check_declaration(run, link, parents, known),
    )
    return Declared(leaf, envelope)


def claim(
    store: Store, log: TransparencyLog, key: SigningKey, run: RunKey, now_ns: int
) -> Envelope:
    """The collector's signed claim of `run`'s cumulative compute, at a fresh signed tree head
    of its log. Raises LineageError for a run it holds neither records nor a declaration of."""
    view = lineage(store, run)
    if view.own == ZERO and view.parent is None and not _held(store, run):
        raise LineageError(f"this collector holds no run {run[1]!r} of account {run[0]!r}")
    head = log.sign().head
    total = view.cumulative
    return RunClaim(
        account=run[0],
        run=run[1],
        flops_estimate=total.flops_estimate,
        flops_upper=total.flops_upper,
        gpu_time_fs=total.gpu_time_fs,
        energy_nj=total.energy_nj,
        tree_size=head.size,
        root_hex=head.root.hex(),
        claimed_at_ns=now_ns,
    ).sign(key)


def _held(store: Store, run: RunKey) -> bool:
    return any((r.account, r.run) == run for r in store.run_page(run[0], run[1], ("", ""), 2))
