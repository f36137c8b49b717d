"""The collector's transparency log: RFC 6962 over a store, and its signed tree heads.

Every accepted envelope is a leaf (its exact stored bytes), appended in commit order inside the
commit's transaction, so the log and the totals never disagree. A store keeps the hash of every
complete subtree as a node (level, index) covering leaves [index * 2^level, (index + 1) * 2^level);
level 0 holds the leaf hashes. A node never changes once written, which makes both paths cheap:

- Appending k leaves to a log of n reads its right edge (`edge(n)`: at most 64 nodes, one per set
  bit of n) and writes k leaves plus fewer than k interior nodes (`append`), whatever n is.
- Every MTH(D[lo:hi]) the RFC recursions ask for is a few complete subtrees. A proof is first
  planned as ranges (`inclusion_ranges`, `consistency_ranges`: pure, no hashes), the store reads
  the nodes those ranges need in one query, then `range_hash` combines them.

`TransparencyLog` serves roots, proofs and signed tree heads over a `LogStore`; it is used on the
store's thread. Verification lives in `flopwatch.merkle` (the offline verifier needs no store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from flopwatch.collector.store.base import LogStore
from flopwatch.dsse import Envelope, Signer
from flopwatch.errors import LogRangeError, StoreError
from flopwatch.keys import SigningKey, public_raw, short_key_id
from flopwatch.merkle import EMPTY_ROOT, node_hash
from flopwatch.statements import SignedTreeHead, TreeHead

Node = tuple[int, int]  # (level, index): leaves [index * 2^level, (index + 1) * 2^level)
Range = tuple[int, int]  # leaves [lo, hi)

# Proofs are planned and their nodes read this many at a time.
_PROOFS_PER_READ = 256


# --- Pure tree arithmetic -------------------------------------------------------------------


def _split(n: int) -> int:
    """RFC 6962 §2.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def edge(size: int) -> list[Node]:
    """The complete subtrees that make up [0, size), left to right: one per set bit of size.

    They are the nodes an append combines with, and the ones the root of `size` is made of.
    """
    out: list[Node] = []
    lo = 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            out.append((level, lo >> level))
            lo += 1 << level
    return out


def append(
    size: int, edge_hashes: Mapping[Node, bytes], leaf_hashes: Sequence[bytes]
) -> dict[Node, bytes]:
    """The nodes to write when `leaf_hashes` are appended to a log of `size` leaves.

    `edge_hashes` must hold the hashes of `edge(size)`. Returns the new leaves and every
    complete subtree they complete, by node.
    """
    known = dict(edge_hashes)
    new: dict[Node, bytes] = {}
    for index, leaf in enumerate(leaf_hashes, start=size):
        level, i, h = 0, index, leaf
        new[(0, i)] = known[(0, i)] = h
        while i & 1:  # a right child completes its parent
            try:
                left = known[(level, i - 1)]
            except KeyError:
                raise StoreError(f"log node {(level, i - 1)} is missing from the edge") from None
            h = node_hash(left, h)
            level, i = level + 1, i >> 1
            new[(level, i)] = known[(level, i)] = h
    return new


def subtrees(lo: int, hi: int) -> list[Node]:
    """The complete subtrees the RFC 6962 recursion splits MTH(D[lo:hi]) into."""
    n = hi - lo
    if n & (n - 1) == 0:  # complete, and aligned to its size wherever the RFC asks for it
        level = n.bit_length() - 1
        return [(level, lo >> level)]
    k = _split(n)
    return [*subtrees(lo, lo + k), *subtrees(lo + k, hi)]


def range_hash(lo: int, hi: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[lo:hi]) from the hashes of `subtrees(lo, hi)`."""
    n = hi - lo
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return nodes[(level, lo >> level)]
    k = _split(n)
    return node_hash(range_hash(lo, lo + k, nodes), range_hash(lo + k, hi, nodes))


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 6962 §2.1.1 PATH(index, D[0:size]) as the leaf ranges whose hashes form it."""
    if not 0 <= index < size:
        raise LogRangeError(f"leaf index {index} is outside a tree of size {size}")
    siblings: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    return siblings[::-1]  # leaf to root


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """RFC 6962 §2.1.2 PROOF(old_size, D[0:new_size]) as leaf ranges (empty for sizes 0, equal)."""
    if not 0 <= old_size <= new_size:
        raise LogRangeError(f"need 0 <= old size ({old_size}) <= new size ({new_size})")
    if old_size in (0, new_size):
        return []
    out: list[Range] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete)
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        out.append((lo, hi))
    return out[::-1]


def nodes_of(ranges: Iterable[Range]) -> set[Node]:
    return {node for lo, hi in ranges for node in subtrees(lo, hi)}


# --- Over a store ---------------------------------------------------------------------------


class TransparencyLog:
    """Roots, proofs and signed tree heads of a store's log. Use on the store's thread."""

    def __init__(
        self, store: LogStore, key: SigningKey, *, now_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._store = store
        self._key = key
        self._now_ns = now_ns

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def signer(self) -> Signer:
        return self._key

    def size(self) -> int:
        return self._store.log_size()

    def _check_size(self, size: int) -> None:
        held = self._store.log_size()
        if not 0 <= size <= held:
            raise LogRangeError(f"tree size {size} is outside the log's 0..{held}")

    def _hashes(self, ranges: Sequence[Range]) -> tuple[bytes, ...]:
        nodes = self._store.log_nodes(nodes_of(ranges))
        return tuple(range_hash(lo, hi, nodes) for lo, hi in ranges)

    def root(self, size: int) -> bytes:
        """RFC 6962 root of the first `size` leaves."""
        self._check_size(size)
        return self._hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        return self.inclusion_proofs([index], size)[index]

    def inclusion_proofs(self, indices: Collection[int], size: int) -> dict[int, tuple[bytes, ...]]:
        """Audit paths of many leaves in the tree of `size`, reading nodes in a few queries."""
        self._check_size(size)
        plans = {i: inclusion_ranges(i, size) for i in indices}
        out: dict[int, tuple[bytes, ...]] = {}
        order = sorted(plans)
        for start in range(0, len(order), _PROOFS_PER_READ):
            chunk = order[start : start + _PROOFS_PER_READ]
            nodes = self._store.log_nodes(nodes_of(r for i in chunk for r in plans[i]))
            for i in chunk:
                out[i] = tuple(range_hash(lo, hi, nodes) for lo, hi in plans[i])
        return out

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        self._check_size(new_size)
        return self._hashes(consistency_ranges(old_size, new_size))

    def leaf_index(self, key_id: str, sequence: int) -> int:
        """The leaf holding record `sequence` of node key `key_id`."""
        index = self._store.log_leaf_index(key_id, sequence)
        if index is None:
            raise LogRangeError(f"the log holds no record {sequence} of key {short_key_id(key_id)}")
        return index

    def latest(self) -> SignedTreeHead | None:
        """The newest tree head this log's store holds, or None before the first."""
        data = self._store.latest_tree_head()
        if data is None:
            return None
        return SignedTreeHead.from_envelope(Envelope.from_bytes(data))

    def sign(self) -> SignedTreeHead:
        """A signed head of the log as it is now; the latest one again if the log has not grown.

        Stored before it is returned, so every head the collector hands out can be found again.
        """
        size = self._store.log_size()
        latest = self.latest()
        if latest is not None and latest.head.log_id != self.key_id:
            raise StoreError(
                f"this log's tree heads are signed by collector key "
                f"{short_key_id(latest.head.log_id)}, "
                f"not by {short_key_id(self.key_id)}: use the collector's own key"
            )
        if latest is not None and latest.head.size == size:
            return latest
        head = TreeHead(
            size=size,
            root=self.root(size),
            timestamp_ns=self._now_ns(),
            public_key=public_raw(self._key.public_key),
        )
        signed = head.sign(self._key)
        self._store.add_tree_head(size, head.timestamp_ns, signed.to_bytes())
        return signed
