"""RFC 6962 Merkle tree: known answers, an independent reference, properties, named attacks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwatch.errors import VerificationError
from flopwatch.merkle import (
    EMPTY_ROOT,
    MerkleLog,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# --- Known answers: the certificate-transparency / Trillian reference tree ---

CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [  # root of the first 1..8 leaves
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H1 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H23 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H4 = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
H45 = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
H67 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
H4567 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
CT_INCLUSION = [  # (index, size, path)
    (0, 1, []),
    (0, 8, [H1, H23, H4567]),
    (5, 8, [H4, H67, CT_ROOTS[3]]),
    (2, 3, [CT_ROOTS[1]]),
    (1, 5, [CT_ROOTS[0], H23, H4]),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, [H1, H23, H4567]),
    (6, 8, [H45, H67, CT_ROOTS[3]]),
    (2, 5, [H23, H4]),
]


def _hex(hashes: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


# --- An independent, straightforward reference (RFC 6962 §2.1 on raw data, with slices) ---


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


MAX_N = 64
DATA = tuple(b"leaf-%d" % i for i in range(MAX_N))
HASHES = tuple(leaf_hash(d) for d in DATA)


def _root(n: int) -> bytes:
    return root_hash(HASHES[:n])


def test_hash_primitives() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert root_hash([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert MerkleLog().root() == EMPTY_ROOT


def test_ct_reference_roots() -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    log = MerkleLog()
    for i, d in enumerate(CT_LEAVES):
        assert log.append(d) == i
    assert root_hash(hashes).hex() == CT_ROOTS[7]
    for n in range(1, 9):
        assert root_hash(hashes[:n]).hex() == CT_ROOTS[n - 1]
        assert log.root(n).hex() == CT_ROOTS[n - 1]
        assert ref_mth(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES[:size]]
    assert _hex(inclusion_proof(hashes, index)) == path
    assert _hex(MerkleLog.from_leaf_hashes(hashes).inclusion_proof(index, size)) == path
    verify_inclusion(
        leaf_index=index,
        tree_size=size,
        leaf_hash=hashes[index],
        proof=[bytes.fromhex(h) for h in path],
        root=bytes.fromhex(CT_ROOTS[size - 1]),
    )


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_ct_reference_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES[:new]]
    assert _hex(consistency_proof(hashes, old)) == path
    assert _hex(MerkleLog.from_leaf_hashes(hashes).consistency_proof(old, new)) == path
    verify_consistency(
        old_size=old,
        new_size=new,
        old_root=bytes.fromhex(CT_ROOTS[old - 1]),
        new_root=bytes.fromhex(CT_ROOTS[new - 1]),
        proof=[bytes.fromhex(h) for h in path],
    )


# --- Exhaustive agreement with the reference, and every honest proof verifies ---


def test_every_inclusion_proof_matches_reference_and_verifies() -> None:
    log = MerkleLog.from_leaf_hashes(HASHES)
    for n in range(1, MAX_N + 1):
        root = _root(n)
        assert root == ref_mth(DATA[:n]) == log.root(n)
        for i in range(n):
            proof = inclusion_proof(HASHES[:n], i)
            assert list(proof) == ref_path(i, DATA[:n])
            assert log.inclusion_proof(i, n) == proof
            verify_inclusion(leaf_index=i, tree_size=n, leaf_hash=HASHES[i], proof=proof, root=root)


def test_every_consistency_proof_matches_reference_and_verifies() -> None:
    log = MerkleLog.from_leaf_hashes(HASHES)
    roots = [_root(n) for n in range(MAX_N + 1)]
    for n in range(MAX_N + 1):
        for m in range(n + 1):
            proof = consistency_proof(HASHES[:n], m)
            assert list(proof) == ([] if m in (0, n) else ref_subproof(m, DATA[:n], True))
            assert log.consistency_proof(m, n) == proof
            verify_consistency(
                old_size=m, new_size=n, old_root=roots[m], new_root=roots[n], proof=proof
            )


# --- Properties: any change to a proof or to what it claims is rejected ---

sizes = st.integers(min_value=1, max_value=MAX_N)


def _inclusion_fails(
    index: int, size: int, lh: bytes, proof: Sequence[bytes], root: bytes
) -> VerificationError:
    with pytest.raises(VerificationError) as e:
        verify_inclusion(leaf_index=index, tree_size=size, leaf_hash=lh, proof=proof, root=root)
    assert e.value.reason == "bad_inclusion_proof"
    return e.value


def _consistency_fails(
    m: int, n: int, r1: bytes, r2: bytes, proof: Sequence[bytes]
) -> VerificationError:
    with pytest.raises(VerificationError) as e:
        verify_consistency(old_size=m, new_size=n, old_root=r1, new_root=r2, proof=proof)
    assert e.value.reason == "bad_consistency_proof"
    return e.value


def _flip(proof: Sequence[bytes], data: st.DataObject) -> list[bytes]:
    i = data.draw(st.integers(0, len(proof) - 1))
    j = data.draw(st.integers(0, len(proof[i]) - 1))
    mask = data.draw(st.integers(1, 255))
    h = bytearray(proof[i])
    h[j] ^= mask
    return [*proof[:i], bytes(h), *proof[i + 1 :]]


@given(st.integers(2, MAX_N), st.data())
def test_inclusion_flipped_byte_fails(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(HASHES[:n], i)
    _inclusion_fails(i, n, HASHES[i], _flip(proof, data), _root(n))


@given(sizes, st.data())
def test_inclusion_wrong_index_fails(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    other = data.draw(st.integers(-2, n + 2).filter(lambda j: j != i))
    _inclusion_fails(other, n, HASHES[i], inclusion_proof(HASHES[:n], i), _root(n))


@given(sizes, st.data())
def test_inclusion_wrong_size_fails(n: int, data: st.DataObject) -> None:
    # The claimed size comes with its own root, as it would in a signed tree head.
    i = data.draw(st.integers(0, n - 1))
    other = data.draw(st.integers(i + 1, MAX_N).filter(lambda s: s != n))
    _inclusion_fails(i, other, HASHES[i], inclusion_proof(HASHES[:n], i), _root(other))


@given(sizes, st.data())
def test_inclusion_wrong_root_or_leaf_fails(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    proof, root = inclusion_proof(HASHES[:n], i), _root(n)
    wrong = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != root))
    _inclusion_fails(i, n, HASHES[i], proof, wrong)
    _inclusion_fails(i, n, leaf_hash(b"not-" + DATA[i]), proof, root)


@given(st.integers(2, MAX_N), st.data())
def test_consistency_flipped_byte_fails(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n - 1))
    proof = consistency_proof(HASHES[:n], m)
    _consistency_fails(m, n, _root(m), _root(n), _flip(proof, data))


@given(st.integers(2, MAX_N), st.data())
def test_consistency_wrong_sizes_fail(n: int, data: st.DataObject) -> None:
    # A proof for 0 < m < n, offered for any other pair (with that pair's honest roots).
    m = data.draw(st.integers(1, n - 1))
    m2 = data.draw(st.integers(0, MAX_N))
    n2 = data.draw(st.integers(m2, MAX_N).filter(lambda s: (m2, s) != (m, n)))
    _consistency_fails(m2, n2, _root(m2), _root(n2), consistency_proof(HASHES[:n], m))


@given(st.integers(1, MAX_N), st.data())
def test_consistency_wrong_roots_fail(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n))
    proof, r1, r2 = consistency_proof(HASHES[:n], m), _root(m), _root(n)
    wrong = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b not in (r1, r2)))
    _consistency_fails(m, n, wrong, r2, proof)
    if m != 0:  # any tree extends the empty tree; nothing to check the new root against
        _consistency_fails(m, n, r1, wrong, proof)


def test_inclusion_argument_checks() -> None:
    root, proof = _root(4), inclusion_proof(HASHES[:4], 1)
    _inclusion_fails(4, 4, HASHES[1], proof, root)
    _inclusion_fails(-1, 4, HASHES[1], proof, root)
    _inclusion_fails(0, 0, HASHES[1], [], EMPTY_ROOT)
    _inclusion_fails(1, 4, HASHES[1][:31], proof, root)
    _inclusion_fails(1, 4, HASHES[1], proof, root + b"\x00")
    _inclusion_fails(1, 4, HASHES[1], [proof[0], proof[1][:16]], root)


def test_consistency_argument_checks() -> None:
    r4, r8, proof = _root(4), _root(8), consistency_proof(HASHES[:8], 4)
    _consistency_fails(8, 4, r8, r4, proof)
    _consistency_fails(-1, 8, r4, r8, proof)
    _consistency_fails(4, 8, r4[:31], r8, proof)
    _consistency_fails(4, 8, r4, r8, [proof[0] + b"\x00"])
    _consistency_fails(4, 4, r4, r8, [])  # equal sizes, different roots
    _consistency_fails(4, 4, r4, r4, proof)  # equal sizes need an empty proof
    _consistency_fails(0, 8, r4, r8, [])  # the empty tree has one root
    _consistency_fails(0, 8, EMPTY_ROOT, r8, proof)


def test_generation_argument_checks() -> None:
    log = MerkleLog.from_leaf_hashes(HASHES[:5])
    with pytest.raises(ValueError):
        inclusion_proof(HASHES[:5], 5)
    with pytest.raises(ValueError):
        consistency_proof(HASHES[:5], 6)
    with pytest.raises(ValueError):
        log.root(6)
    with pytest.raises(ValueError):
        log.inclusion_proof(3, 3)
    with pytest.raises(ValueError):
        log.consistency_proof(3, 6)
    with pytest.raises(ValueError):
        log.consistency_proof(4, 3)
    with pytest.raises(ValueError):
        log.append_leaf_hash(b"short")
    with pytest.raises(ValueError):
        log.leaf_hash_at(5)
    assert log.leaf_hash_at(4) == HASHES[4]


# --- Attacks ---


def test_rewritten_history() -> None:
    # The log served 8 leaves, then rewrote leaf 3 and kept appending.
    honest = MerkleLog.from_leaf_hashes(HASHES[:8])
    forged = MerkleLog.from_leaf_hashes([*HASHES[:3], leaf_hash(b"rewritten"), *HASHES[4:16]])
    for old in range(4, 9):  # every old tree that contains leaf 3
        for new in range(old, 17):
            proof = forged.consistency_proof(old, new)
            verify_consistency(  # a valid proof of the forged log's own history...
                old_size=old,
                new_size=new,
                old_root=forged.root(old),
                new_root=forged.root(new),
                proof=proof,
            )
            # ...is no proof that it extends the tree clients saw.
            _consistency_fails(old, new, honest.root(old), forged.root(new), proof)
    for old in range(1, 4):  # leaves before the rewrite are still consistent
        proof = forged.consistency_proof(old, 16)
        verify_consistency(
            old_size=old,
            new_size=16,
            old_root=honest.root(old),
            new_root=forged.root(16),
            proof=proof,
        )


def test_truncated_proof() -> None:
    n, i = 13, 6
    proof, root = inclusion_proof(HASHES[:n], i), _root(n)
    # Rejected on length, before any hashing.
    assert "expected 4" in _inclusion_fails(i, n, HASHES[i], proof[:-1], root).message
    _inclusion_fails(i, n, HASHES[i], proof[1:], root)
    _inclusion_fails(i, n, HASHES[i], [], root)
    cproof = consistency_proof(HASHES[:n], 6)
    assert "expected 4" in _consistency_fails(6, n, _root(6), root, cproof[:-1]).message
    _consistency_fails(6, n, _root(6), root, cproof[1:])
    _consistency_fails(6, n, _root(6), root, [])


def test_extended_proof() -> None:
    n, i = 13, 6
    proof, root = inclusion_proof(HASHES[:n], i), _root(n)
    assert "expected 4" in _inclusion_fails(i, n, HASHES[i], [*proof, root], root).message
    _inclusion_fails(i, n, HASHES[i], [*proof, proof[-1]], root)
    _inclusion_fails(i, n, HASHES[i], [HASHES[i], *proof], root)
    cproof = consistency_proof(HASHES[:n], 6)
    assert "expected 4" in _consistency_fails(6, n, _root(6), root, [*cproof, root]).message
    _consistency_fails(6, n, _root(6), root, [_root(6), *cproof])
    # A complete old tree's root is implied; sending it too is one hash too many.
    _consistency_fails(4, n, _root(4), root, [_root(4), *consistency_proof(HASHES[:n], 4)])


def test_interior_node_presented_as_leaf() -> None:
    # Second preimage: without the 0x00/0x01 prefixes, "h0 || h1" as a leaf of a 2-leaf tree
    # would hash to the 4-leaf tree's left child.
    data = HASHES[0] + HASHES[1]
    proof = [node_hash(HASHES[2], HASHES[3])]
    _inclusion_fails(0, 2, leaf_hash(data), proof, _root(4))
    _inclusion_fails(0, 2, node_hash(HASHES[0], HASHES[1]), proof, _root(2))


def test_tree_size_is_bound_by_the_root_not_the_proof() -> None:
    # Proofs for index 0 in trees of 5..8 leaves have the same shape, so a 5-leaf proof checks
    # against the 5-leaf root under a claimed size of 8. Size and root must come from one
    # signed tree head; the module docstring says so.
    proof = inclusion_proof(HASHES[:5], 0)
    verify_inclusion(leaf_index=0, tree_size=8, leaf_hash=HASHES[0], proof=proof, root=_root(5))
    _inclusion_fails(0, 8, HASHES[0], proof, _root(8))


# --- The incremental log at scale ---


def test_merkle_log_large() -> None:
    n = 100_000
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    log = MerkleLog()
    for i in range(n):
        assert log.append(i.to_bytes(4, "big")) == i
    assert log.size == n
    assert log.root() == root_hash(hashes)
    for size in (1, 2, 3, 65_536, 65_537, 99_999, n):
        root = log.root(size)
        assert root == root_hash(hashes[:size])
        for i in {0, size // 3, size - 1}:
            proof = log.inclusion_proof(i, size)
            assert len(proof) <= 2 * size.bit_length()
            verify_inclusion(
                leaf_index=i, tree_size=size, leaf_hash=hashes[i], proof=proof, root=root
            )
    for old in (1, 7, 4096, 65_535, 65_536, 70_001, n):
        proof = log.consistency_proof(old, n)
        assert proof == consistency_proof(hashes, old)
        verify_consistency(
            old_size=old, new_size=n, old_root=log.root(old), new_root=log.root(), proof=proof
        )
