"""The Merkle sum tree: every path leads to the root with the sums of all leaves; a changed
leaf, sibling, order or root is refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.errors import VerificationError
from flopwatch.sumtree import (
    MAX_FLOPS,
    NODE_BYTES,
    StreamedTree,
    SumNode,
    Sums,
    SumTree,
    check_path,
    leaf_node,
    parent,
    path_root,
)

sums = st.builds(
    Sums,
    st.integers(0, 10**20),
    st.integers(0, 10**20),
    st.integers(0, 1000),
    st.integers(0, 10**12),
)


def _ascending(rows: list[tuple[int, Sums]]) -> list[SumNode]:
    out, index = [], -1
    for step, s in rows:
        index += step
        out.append(leaf_node(index, hashlib.sha256(str(index).encode()).digest(), s))
    return out


# Strictly increasing log leaf indices, each with its figures.
leaves = st.lists(st.tuples(st.integers(1, 50), sums), min_size=1, max_size=40).map(_ascending)


def _total(nodes: list[SumNode]) -> Sums:
    t = Sums()
    for n in nodes:
        t = t + n.sums
    return t


@settings(max_examples=60, deadline=None)
@given(leaves)
def test_every_path_leads_to_the_root_which_holds_all_sums_and_the_window(nodes):
    tree = SumTree(nodes)
    assert tree.root.sums == _total(nodes)
    assert (tree.root.lowest, tree.root.highest) == (nodes[0].lowest, nodes[-1].highest)
    for p, leaf in enumerate(nodes):
        path = tree.path(p)
        assert len(path) <= len(nodes).bit_length()
        check_path(p, tree.size, leaf, path, tree.root)
        again = [SumNode.from_bytes(n.to_bytes()) for n in path]  # the wire form round-trips
        assert path_root(p, tree.size, leaf, again) == tree.root


@settings(max_examples=60, deadline=None)
@given(leaves, st.data())
def test_a_leaf_with_other_figures_does_not_reach_the_root(nodes, data):
    tree = SumTree(nodes)
    p = data.draw(st.integers(0, len(nodes) - 1))
    leaf = nodes[p]
    more = Sums(
        leaf.sums.estimate + data.draw(st.integers(1, 10**6)), *tuple(vars(leaf.sums).values())[1:]
    )
    forged = leaf_node(leaf.lowest, hashlib.sha256(str(leaf.lowest).encode()).digest(), more)
    with pytest.raises(VerificationError) as e:
        check_path(p, tree.size, forged, tree.path(p), tree.root)
    assert e.value.reason == "bad_sum_path"


@settings(max_examples=60, deadline=None)
@given(leaves.filter(lambda n: len(n) >= 2), st.data())
def test_a_sibling_with_other_sums_or_range_does_not_reach_the_root(nodes, data):
    tree = SumTree(nodes)
    p = data.draw(st.integers(0, len(nodes) - 1))
    path = list(tree.path(p))
    i = data.draw(st.integers(0, len(path) - 1))
    s = path[i]
    change = data.draw(st.sampled_from(["sums", "hash", "range"]))
    if change == "sums":
        path[i] = SumNode(s.hash, s.sums + Sums(1), s.lowest, s.highest)
    elif change == "hash":
        path[i] = SumNode(bytes(32), s.sums, s.lowest, s.highest)
    else:
        path[i] = SumNode(s.hash, s.sums, s.lowest, s.highest + 1)
    with pytest.raises(VerificationError):
        check_path(p, tree.size, nodes[p], path, tree.root)


@settings(max_examples=40, deadline=None)
@given(leaves, st.data())
def test_wrong_position_size_or_path_length_is_refused(nodes, data):
    tree = SumTree(nodes)
    p = data.draw(st.integers(0, len(nodes) - 1))
    path = tree.path(p)
    with pytest.raises(VerificationError):
        check_path(p, tree.size + 1, nodes[p], (*path, tree.root), tree.root)
    if path:
        with pytest.raises(VerificationError):
            check_path(p, tree.size, nodes[p], path[:-1], tree.root)
    with pytest.raises(VerificationError):
        check_path(tree.size, tree.size, nodes[p], path, tree.root)


def test_leaves_out_of_order_or_twice_make_no_tree():
    a = leaf_node(5, bytes(32), Sums(1, 2, 1, 1))
    b = leaf_node(3, bytes(32), Sums(1, 2, 1, 1))
    with pytest.raises(VerificationError, match="out of order"):
        SumTree([a, b])
    with pytest.raises(VerificationError, match="out of order"):
        SumTree([a, a])  # a duplicated record: the same log leaf twice


def test_a_path_that_hides_a_duplicate_is_refused_where_it_is_checked():
    """A lying tree that holds leaf 7 twice: the parent of the two copies cannot be formed by
    the verifier, so the opened copy's path fails."""
    a = leaf_node(7, bytes(32), Sums(10, 20, 1, 1))
    # the sibling a liar would send: a copy of `a` itself as the right neighbour
    with pytest.raises(VerificationError) as e:
        path_root(0, 2, a, [a])
    assert e.value.reason == "bad_sum_path"


def test_wire_forms_are_fixed_and_bounded():
    n = leaf_node(1, bytes(32), Sums(MAX_FLOPS, 0, 0, 0))
    assert len(n.to_bytes()) == NODE_BYTES
    with pytest.raises(VerificationError):
        leaf_node(1, bytes(32), Sums(MAX_FLOPS + 1, 0, 0, 0))
    with pytest.raises(VerificationError):
        SumNode.from_bytes(b"\x00" * (NODE_BYTES - 1))
    empty = n.hash + Sums().to_bytes() + (5).to_bytes(8, "big") + (4).to_bytes(8, "big")
    with pytest.raises(VerificationError, match="empty"):
        SumNode.from_bytes(empty)
    with pytest.raises(VerificationError):
        parent(SumNode(bytes(32), Sums(MAX_FLOPS), 0, 0), SumNode(bytes(32), Sums(1), 1, 1))


@settings(max_examples=60, deadline=None)
@given(leaves, st.data())
def test_a_streamed_tree_has_the_same_root_and_paths(nodes, data):
    tree = SumTree(nodes)
    kept = data.draw(st.sets(st.integers(0, len(nodes) - 1)))
    streamed = StreamedTree()
    for p, leaf in enumerate(nodes):
        assert streamed.push(leaf, keep=p in kept) == p
    assert streamed.finish() == tree.root and streamed.size == tree.size
    for p in kept:
        assert streamed.path(p) == tree.path(p)


def test_a_streamed_tree_matches_for_every_size_and_position():
    for n in range(1, 70):
        nodes = _ascending([(1, Sums(i, i, 1, 1)) for i in range(n)])
        tree, streamed = SumTree(nodes), StreamedTree()
        for leaf in nodes:
            streamed.push(leaf, keep=True)
        assert streamed.finish() == tree.root
        assert all(streamed.path(p) == tree.path(p) for p in range(n))


def test_a_streamed_tree_refuses_leaves_out_of_order_and_needs_one():
    with pytest.raises(ValueError):
        StreamedTree().finish()
    a, b = _ascending([(1, Sums()), (1, Sums())])
    t = StreamedTree()
    t.push(b)
    with pytest.raises(VerificationError):
        t.push(a)
