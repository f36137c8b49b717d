"""RFC 6962 Merkle tree hashing and proofs (SHA-256), for the collector's transparency log.

Pure and I/O-free. Hashing, the Merkle Tree Hash (MTH), audit paths and consistency proofs follow
RFC 6962 §2.1; verification follows the algorithms of RFC 9162 §2.1.3.2 (inclusion) and
§2.1.4.2 (consistency), with the proof length checked up front (as Trillian's `proof` package
does). Verifiers raise `VerificationError` with reason `bad_inclusion_proof` or
`bad_consistency_proof`; they never return False.

A proof binds a tree size to a root hash only through the root: verify against a (size, root)
pair taken from one signed tree head, never a size from one place and a root from another.

Generation takes indices the caller has already checked and raises `ValueError` on bad ones;
`MerkleLog` keeps every complete subtree hash so roots and proofs cost O(log^2 n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from flopwatch.errors import VerificationError

HASH_SIZE = 32
# RFC 9162 sizes and indices are uint64.
MAX_TREE_SIZE = (1 << 64) - 1
# RFC 6962 §2.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

BAD_INCLUSION = "bad_inclusion_proof"
BAD_CONSISTENCY = "bad_consistency_proof"

# MTH(D[lo:hi]) for 0 <= lo < hi <= n: how the generators below read a tree.
_SubtreeHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1: MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: an interior node, SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """RFC 6962 §2.1: k, the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- Generation (RFC 6962 §2.1.1, §2.1.2), over any subtree-hash source ---


def _path(m: int, lo: int, hi: int, mth: _SubtreeHash) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[lo:hi]), ordered leaf to root."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, lo, lo + k, mth), mth(lo + k, hi)]
    return [*_path(m - k, lo + k, hi, mth), mth(lo, lo + k)]


def _subproof(m: int, lo: int, hi: int, complete: bool, mth: _SubtreeHash) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if complete else [mth(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete, mth), mth(lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False, mth), mth(lo, lo + k)]


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")


def _check_size(size: int, log_size: int) -> None:
    if not 0 <= size <= log_size:
        raise ValueError(f"tree size {size} is outside 0..{log_size}")


def _check_sizes(old_size: int, new_size: int, size: int) -> None:
    if not 0 <= old_size <= new_size <= size:
        raise ValueError(f"need 0 <= old ({old_size}) <= new ({new_size}) <= size ({size})")


def _inclusion(index: int, size: int, mth: _SubtreeHash) -> tuple[bytes, ...]:
    _check_index(index, size)
    return tuple(_path(index, 0, size, mth))


def _consistency(old_size: int, new_size: int, mth: _SubtreeHash) -> tuple[bytes, ...]:
    # RFC 6962 defines PROOF(m, D[n]) for 0 < m < n; sizes 0 and m == n get the empty proof.
    if old_size in (0, new_size):
        return ()
    return tuple(_subproof(old_size, 0, new_size, True, mth))


# --- Pure functions over a list of leaf hashes: O(n) hashes per call ---


def _list_mth(hashes: Sequence[bytes]) -> _SubtreeHash:
    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return hashes[lo]
        k = _split(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH of an ordered list of leaf hashes (EMPTY_ROOT for none)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _list_mth(leaf_hashes)(0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """RFC 6962 §2.1.1 audit path for leaf `index` in the tree of all `leaf_hashes`."""
    return _inclusion(index, len(leaf_hashes), _list_mth(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> tuple[bytes, ...]:
    """RFC 6962 §2.1.2 proof that the first `old_size` leaves are a prefix of all of them."""
    _check_sizes(old_size, len(leaf_hashes), len(leaf_hashes))
    return _consistency(old_size, len(leaf_hashes), _list_mth(leaf_hashes))


# --- Verification (RFC 9162 §2.1.3.2, §2.1.4.2) ---


def _inclusion_proof_len(index: int, size: int) -> int:
    # Hashes below the point where the paths to `index` and to the last leaf part, plus one per
    # left sibling above it (the "border"); same decomposition as Trillian's decompInclProof.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _check_hash(reason: str, name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(reason, f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof(reason: str, proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise VerificationError(reason, f"proof has {len(proof)} hashes, expected {want}")
    for i, h in enumerate(proof):
        _check_hash(reason, f"proof hash {i}", h)


def verify_inclusion(
    *, leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `leaf_index` of the tree of `tree_size` with `root`.

    RFC 9162 §2.1.3.2. Raises VerificationError("bad_inclusion_proof", ...).
    """
    r = BAD_INCLUSION
    # 1. Ranges, hash sizes and the exact proof length, before hashing anything.
    if not 0 <= leaf_index < tree_size <= MAX_TREE_SIZE:
        raise VerificationError(r, f"leaf index {leaf_index} is outside tree size {tree_size}")
    _check_hash(r, "leaf hash", leaf_hash)
    _check_hash(r, "root", root)
    _check_proof(r, proof, _inclusion_proof_len(leaf_index, tree_size))
    # 2-4. Walk from the leaf to the root; fn is the node's index, sn the last node's index.
    fn, sn, h = leaf_index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError(r, "proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            h = node_hash(p, h)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            h = node_hash(h, p)
        fn, sn = fn >> 1, sn >> 1
    # 5. The walk must end at the root, with the root hash.
    if sn != 0:
        raise VerificationError(r, "proof is shorter than the path to the root")
    if h != root:
        raise VerificationError(r, "computed root does not match the expected root")


def _consistency_proof_len(old_size: int, new_size: int) -> int:
    # As `_inclusion_proof_len` for leaf old_size-1, less the levels under the largest complete
    # subtree ending at old_size, plus that subtree's own hash unless it is the whole old tree.
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    shift = (old_size & -old_size).bit_length() - 1
    seed = 0 if old_size == 1 << shift else 1
    return seed + inner - shift + border


def verify_consistency(
    *, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `old_size` with `old_root` is a prefix of the one of `new_size`.

    RFC 9162 §2.1.4.2, plus the trivial cases: equal sizes need an empty proof and equal roots;
    old size 0 needs an empty proof and old_root == EMPTY_ROOT. Raises
    VerificationError("bad_consistency_proof", ...).
    """
    r = BAD_CONSISTENCY
    # 1. Ranges, hash sizes, the trivial cases and the exact proof length.
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise VerificationError(r, f"need 0 <= old size ({old_size}) <= new size ({new_size})")
    _check_hash(r, "old root", old_root)
    _check_hash(r, "new root", new_root)
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise VerificationError(r, "old tree is empty but old root is not the empty root")
    if old_size in (0, new_size):
        if proof:
            raise VerificationError(r, f"expected an empty proof, got {len(proof)} hashes")
        if old_root != new_root and old_size == new_size:
            raise VerificationError(r, "trees of the same size have different roots")
        return
    _check_proof(r, proof, _consistency_proof_len(old_size, new_size))
    # 2. A complete old tree is its own first hash.
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    # 3-4. fn/sn index the last old node and last new node; climb past right-child levels.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5-6. fr rebuilds the old root, sr the new root.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(r, "proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # 7. Both roots must match, and the walk must end at the new root.
    if sn != 0:
        raise VerificationError(r, "proof is shorter than the path to the root")
    if fr != old_root:
        raise VerificationError(r, "computed old root does not match the expected old root")
    if sr != new_root:
        raise VerificationError(r, "computed new root does not match the expected new root")


# --- An in-memory, append-only log ---


class MerkleLog:
    """Leaf hashes in memory, with every complete (power-of-two, aligned) subtree hash kept.

    `_levels[h][i]` is the hash of leaves [i * 2^h, (i + 1) * 2^h). `append` is amortised O(1)
    hashes; any MTH(D[lo:hi]) the RFC recursions ask for is a complete subtree (O(1)) plus a
    right-hand remainder, so `root` costs O(log n) hashes and proofs O(log^2 n). Memory is about
    2n hashes. Not thread-safe: the owner serialises access.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> MerkleLog:
        """Rebuild a log from stored leaf hashes, in order."""
        log = cls()
        for h in hashes:
            log.append_leaf_hash(h)
        return log

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Append a leaf (hashed with `leaf_hash`); return its index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, h: bytes) -> int:
        """Append an already-hashed leaf; return its index."""
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(h)} bytes, not {HASH_SIZE}")
        index = self.size
        self._levels[0].append(h)
        level = 0
        while len(self._levels[level]) % 2 == 0:
            row = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(row[-2], row[-1]))
            level += 1
        return index

    def leaf_hash_at(self, index: int) -> bytes:
        """The hash of leaf `index`, as `verify_inclusion` wants it."""
        _check_index(index, self.size)
        return self._levels[0][index]

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0:  # complete and, in the RFC recursions, aligned to its size
            h = n.bit_length() - 1
            return self._levels[h][lo >> h]
        k = _split(n)
        return node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """RFC 6962 §2.1 MTH of the first `size` leaves (default: all)."""
        size = self.size if size is None else size
        _check_size(size, self.size)
        return EMPTY_ROOT if size == 0 else self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[bytes, ...]:
        """RFC 6962 §2.1.1 audit path for leaf `index` in the tree of the first `size` leaves."""
        size = self.size if size is None else size
        _check_size(size, self.size)
        return _inclusion(index, size, self._mth)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> tuple[bytes, ...]:
        """RFC 6962 §2.1.2 proof that the tree of `old_size` is a prefix of that of `new_size`."""
        new_size = self.size if new_size is None else new_size
        _check_sizes(old_size, new_size, self.size)
        return _consistency(old_size, new_size, self._mth)
