"""A run's lineage as evidence for the in-toto predicate (`flopwatch.intoto.predicate.LineageLink`):
each ancestor the collector's lineage store knows, with the declaration that links it, proved
in the collector's log.

Read in two steps around the report: `parents` takes the declarations held before the report's
tree head is signed (so each of their log leaves is below its size: a declaration is never
changed or withdrawn), then `lineage_links` reads each declaration's leaf and its inclusion
proof at the report's tree size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import Store
from flopwatch.dsse import Envelope
from flopwatch.errors import StoreError, VerificationError
from flopwatch.intoto.predicate import ForeignClaim, LineageLink
from flopwatch.keys import SigningKey
from flopwatch.lineage import ForeignParent, Parent, RunKey, ancestors
from flopwatch.merkle import leaf_hash
from flopwatch.runs import WorkloadClass, classes_in
from flopwatch.statements import RunDeclaration


def lineage_links(
    store: Store,
    log: TransparencyLog,
    run: RunKey,
    parents: Mapping[RunKey, Parent],
    *,
    key: SigningKey,
    tree_size: int,
) -> tuple[LineageLink, ...]:
    """The ancestors of `run` (account, run), nearest first, as `parents` (read before the
    tree head of `tree_size` was signed) declares them; `key` is the collector key that signed
    the declarations (the log's). StoreError if a declaration the store
    holds is not in the log below that size, or is not what its row says."""
    links = []
    child = run
    for ancestor in ancestors(run, parents):
        parent = parents[child]
        leaf = store.declaration_leaf(child)
        if leaf is None or leaf >= tree_size:
            raise StoreError(
                f"the lineage declaration of run {child[1]!r} (account {child[0]!r}) is not in "
                f"the log below tree size {tree_size}"
            )
        [data] = store.log_entries(leaf, leaf + 1)
        try:
            decl = RunDeclaration.verified(Envelope.from_bytes(data), key.public_key)
        except VerificationError as e:
            raise StoreError(f"log leaf {leaf}, a lineage declaration, cannot be read: {e}") from e
        if ((decl.account, decl.run), (decl.parent_account, decl.parent_run)) != (child, ancestor):
            raise StoreError(f"log leaf {leaf} is not the declaration the lineage store names")
        claim = None
        if isinstance(parent, ForeignParent):
            claim = ForeignClaim(
                parent.collector,
                hashlib.sha256(decl.parent_claim).hexdigest(),
                parent.cumulative.flops_estimate,
                parent.cumulative.flops_upper,
            )
        [proof] = log.inclusion_proofs([leaf], tree_size).values()
        links.append(
            LineageLink(
                run=ancestor[1],
                account=ancestor[0],
                workload_class=_class_of(store, ancestor, claim is not None),
                leaf_index=leaf,
                leaf_hash=leaf_hash(data).hex(),
                inclusion_proof=tuple(h.hex() for h in proof),
                declaration=data,
                parent_claim=claim,
            )
        )
        child = ancestor
    return tuple(links)


def _class_of(store: Store, key: RunKey, foreign: bool) -> str:
    """The class the run's records declared, as its totals hold them: one class, else unknown
    (none, several, or a run of another collector)."""
    if foreign:
        return WorkloadClass.UNKNOWN.value
    total = store.runs_for([key]).get(key)
    found = classes_in(total.classes) if total is not None else ()
    return found[0].value if len(found) == 1 else WorkloadClass.UNKNOWN.value
