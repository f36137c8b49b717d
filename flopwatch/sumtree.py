"""A Merkle sum tree over a job's log records: what a sampled report commits to. Pure.

Each leaf is one record of the job: its log leaf index, its RFC 6962 leaf hash and the job's
figures in it (`Sums`). Each node carries a hash, the sums of the leaves below it and the range
of log leaf indices below it (lowest, highest). A parent's hash commits to both children's hash,
sums and range; its sums are theirs added, its range runs from the left child's lowest to the
right child's highest, and the left child's highest must lie below the right child's lowest.
So the root (hash, sums, range) commits to every leaf's figures and to their order; an opening
of one leaf (its path: each sibling's node, bottom up) shows that its figures are among those
added into the root's sums and that, along that path, log leaf indices strictly increase.

The tree's shape is RFC 6962's (pairs bottom up; an odd last node is promoted unchanged), so a
path is checked with the RFC 9162 inclusion walk. Hashes are domain-separated from the log's:
leaf SHA-256(0x10 || ...), node SHA-256(0x11 || ...).

A node travels as `NODE_BYTES` fixed bytes: hash (32) | estimate (16) | upper (16) |
intervals (8) | GPU-ns (8) | lowest leaf (8) | highest leaf (8), integers big-endian.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from flopwatch.errors import VerificationError

HASH_SIZE = 32
FLOPS_BYTES = 16  # a sum of FLOPs: below 2^128 (a 1e26 run is below 2^87)
SUMS_BYTES = 2 * FLOPS_BYTES + 8 + 8
NODE_BYTES = HASH_SIZE + SUMS_BYTES + 8 + 8
MAX_FLOPS = (1 << (8 * FLOPS_BYTES)) - 1
MAX_U64 = (1 << 64) - 1
_LEAF = b"\x10"
_NODE = b"\x11"

BAD_SUM_PATH = "bad_sum_path"


@dataclass(frozen=True)
class Sums:
    """A job's figures added up: FLOPs estimate and sound upper bound, (GPU interval, job)
    contributions, and GPU-nanoseconds of the intervals the job had work in."""

    estimate: int = 0
    upper: int = 0
    intervals: int = 0
    gpu_ns: int = 0

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.estimate + other.estimate,
            self.upper + other.upper,
            self.intervals + other.intervals,
            self.gpu_ns + other.gpu_ns,
        )

    def to_bytes(self) -> bytes:
        if not (0 <= self.estimate <= MAX_FLOPS and 0 <= self.upper <= MAX_FLOPS):
            raise VerificationError(BAD_SUM_PATH, "a FLOPs sum is outside 0..2^128")
        if not (0 <= self.intervals <= MAX_U64 and 0 <= self.gpu_ns <= MAX_U64):
            raise VerificationError(BAD_SUM_PATH, "an interval or GPU-time sum is outside 0..2^64")
        return (
            self.estimate.to_bytes(FLOPS_BYTES, "big")
            + self.upper.to_bytes(FLOPS_BYTES, "big")
            + struct.pack(">QQ", self.intervals, self.gpu_ns)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Sums:
        if len(data) != SUMS_BYTES:
            raise VerificationError(BAD_SUM_PATH, f"sums of {len(data)} bytes, not {SUMS_BYTES}")
        intervals, gpu_ns = struct.unpack(">QQ", data[2 * FLOPS_BYTES :])
        return cls(
            int.from_bytes(data[:FLOPS_BYTES], "big"),
            int.from_bytes(data[FLOPS_BYTES : 2 * FLOPS_BYTES], "big"),
            intervals,
            gpu_ns,
        )


@dataclass(frozen=True)
class SumNode:
    """A node of the sum tree: hash, sums of the leaves below, their log leaf index range."""

    hash: bytes
    sums: Sums
    lowest: int
    highest: int

    def to_bytes(self) -> bytes:
        if not (0 <= self.lowest <= MAX_U64 and 0 <= self.highest <= MAX_U64):
            raise VerificationError(BAD_SUM_PATH, "a log leaf index is outside 0..2^64")
        return self.hash + self.sums.to_bytes() + struct.pack(">QQ", self.lowest, self.highest)

    @classmethod
    def from_bytes(cls, data: bytes) -> SumNode:
        if len(data) != NODE_BYTES:
            raise VerificationError(
                BAD_SUM_PATH, f"a sum-tree node of {len(data)} bytes, not {NODE_BYTES}"
            )
        lowest, highest = struct.unpack(">QQ", data[HASH_SIZE + SUMS_BYTES :])
        node = cls(
            data[:HASH_SIZE],
            Sums.from_bytes(data[HASH_SIZE : HASH_SIZE + SUMS_BYTES]),
            lowest,
            highest,
        )
        if lowest > highest:
            raise VerificationError(BAD_SUM_PATH, f"a node's range {lowest}..{highest} is empty")
        return node


def leaf_node(leaf_index: int, log_leaf_hash: bytes, sums: Sums) -> SumNode:
    """The sum-tree leaf of the record at log leaf `leaf_index` (RFC 6962 hash `log_leaf_hash`)."""
    if len(log_leaf_hash) != HASH_SIZE:
        raise VerificationError(BAD_SUM_PATH, "a log leaf hash is not 32 bytes")
    if not 0 <= leaf_index <= MAX_U64:
        raise VerificationError(BAD_SUM_PATH, "a log leaf index is outside 0..2^64")
    h = hashlib.sha256(
        _LEAF + struct.pack(">Q", leaf_index) + log_leaf_hash + sums.to_bytes()
    ).digest()
    return SumNode(h, sums, leaf_index, leaf_index)


def parent(left: SumNode, right: SumNode) -> SumNode:
    """The node above `left` and `right`; VerificationError unless their ranges are in order."""
    if left.highest >= right.lowest:
        raise VerificationError(
            BAD_SUM_PATH,
            f"log leaves out of order: {left.highest} is left of {right.lowest}",
        )
    sums = left.sums + right.sums
    if max(sums.estimate, sums.upper) > MAX_FLOPS or max(sums.intervals, sums.gpu_ns) > MAX_U64:
        raise VerificationError(BAD_SUM_PATH, "the sums overflow their fields")
    h = hashlib.sha256(_NODE + left.to_bytes() + right.to_bytes()).digest()
    return SumNode(h, sums, left.lowest, right.highest)


class SumTree:
    """All levels of a sum tree, built from its leaves in log order (strictly increasing)."""

    def __init__(self, leaves: Sequence[SumNode]) -> None:
        if not leaves:
            raise ValueError("a sum tree needs at least one leaf")
        self._levels: list[list[SumNode]] = [list(leaves)]
        level = self._levels[0]
        while len(level) > 1:
            up = [parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self._levels.append(up)
            level = up

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> SumNode:
        return self._levels[-1][0]

    def leaf(self, position: int) -> SumNode:
        return self._levels[0][position]

    def path(self, position: int) -> tuple[SumNode, ...]:
        """The siblings from leaf `position` up to the root (a promoted node has none)."""
        if not 0 <= position < self.size:
            raise IndexError(position)
        out = []
        i = position
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            i >>= 1
        return tuple(out)


def path_root(position: int, size: int, leaf: SumNode, path: Sequence[SumNode]) -> SumNode:
    """The root that `leaf` at `position` of a tree of `size` leaves and its `path` give (RFC
    9162 inclusion walk), checking order and sums at every step; VerificationError if the path
    cannot be one of such a tree."""
    if not 0 <= position < size:
        raise VerificationError(BAD_SUM_PATH, f"position {position} outside {size} leaves")
    fn, sn = position, size - 1
    node = leaf
    for sibling in path:
        if sn == 0:
            raise VerificationError(BAD_SUM_PATH, "the path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = parent(sibling, node)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = parent(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(BAD_SUM_PATH, "the path is shorter than the tree is deep")
    return node


def check_path(
    position: int, size: int, leaf: SumNode, path: Sequence[SumNode], root: SumNode
) -> None:
    """VerificationError(bad_sum_path) unless `path` leads `leaf` to exactly `root`."""
    got = path_root(position, size, leaf, path)
    if got != root:
        raise VerificationError(
            BAD_SUM_PATH,
            f"the sum-tree path of position {position} does not lead to the claimed root",
        )


class StreamedTree:
    """The sum tree of leaves pushed one at a time in log order, in O(log n) memory (a stack of
    complete subtrees), keeping the path of each leaf pushed with `keep=True`: O(k log n) for k
    kept. Root and paths are exactly `SumTree`'s for the same leaves.

    A kept leaf's left siblings are the complete subtrees on the stack when it is pushed; its
    right siblings are complete subtrees formed later, or at `finish` the promoted node of the
    leaves after the last complete subtree of that size (RFC 6962's shape).
    """

    _LEVELS = 64  # positions are below 2^64

    def __init__(self) -> None:
        self._stack: list[tuple[int, int, SumNode]] = []  # (level, first position, node)
        self._size = 0
        self._paths: dict[int, dict[int, SumNode]] = {}  # kept position -> level -> sibling
        self._wanted: dict[tuple[int, int], list[int]] = {}  # (level, first) -> kept positions
        self._root: SumNode | None = None

    @property
    def size(self) -> int:
        return self._size

    def push(self, leaf: SumNode, *, keep: bool = False) -> int:
        """Add the next leaf; returns its position. VerificationError if it is not to the
        right of the previous one."""
        if self._root is not None:
            raise ValueError("the tree is finished")
        position = self._size
        if keep:
            self._paths[position] = {level: node for level, _, node in self._stack}
            for level in range(self._LEVELS):
                if not (position >> level) & 1:
                    first = ((position >> level) + 1) << level
                    self._wanted.setdefault((level, first), []).append(position)
        self._formed(0, position, leaf)
        self._stack.append((0, position, leaf))
        self._size += 1
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            level, first, right = self._stack.pop()
            _, first, left = self._stack.pop()
            up = parent(left, right)
            self._formed(level + 1, first, up)
            self._stack.append((level + 1, first, up))
        return position

    def _formed(self, level: int, first: int, node: SumNode) -> None:
        for position in self._wanted.pop((level, first), ()):
            self._paths[position][level] = node

    def finish(self) -> SumNode:
        """The root; after it, `path` of each kept position. ValueError if no leaf was pushed."""
        if self._root is not None:
            return self._root
        if not self._stack:
            raise ValueError("a sum tree needs at least one leaf")
        # suffix[i]: the node of every leaf from stack entry i on (a fold from the right).
        suffix = [self._stack[-1][2]]
        for _, _, node in reversed(self._stack[:-1]):
            suffix.append(parent(node, suffix[-1]))
        suffix.reverse()
        firsts = {first: i for i, (_, first, _) in enumerate(self._stack)}
        for (level, first), positions in self._wanted.items():
            # A right sibling of fewer than 2^level leaves: the promoted node of the leaves
            # from `first` on, which starts at a stack entry.
            if first < self._size < first + (1 << level):
                for position in positions:
                    self._paths[position][level] = suffix[firsts[first]]
        self._wanted.clear()
        self._root = suffix[0]
        return self._root

    def path(self, position: int) -> tuple[SumNode, ...]:
        """The siblings of kept leaf `position` from the leaf up to the root (as `SumTree`)."""
        if self._root is None:
            raise ValueError("the tree is not finished")
        siblings = self._paths[position]
        out = []
        for level in range(self._LEVELS):
            if (((position >> level) ^ 1) << level) < self._size:
                out.append(siblings[level])
        return tuple(out)
