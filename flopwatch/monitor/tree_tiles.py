"""One tree's tiles, authenticated against its checkpoint's root the tlog-tiles way. Pure.

A tree of size N has, at each tile level L, `N >> 8L` hashes of complete subtrees of 256^L
leaves, in full tiles of 256 and at most one partial tile on the right. The tree's root is made
of exactly the partial tiles' hashes (one complete subtree per set bit of N, and the bits of N at
8L..8L+7 are the partial tile of level L's width), so recomputing the root from them and finding
the checkpoint's root authenticates every partial tile at once. A full tile is authenticated by
its parent: its 256 hashes hash to hash `t % 256` of tile `(L + 1, t // 256)`, itself
authenticated the same way, up to a partial tile. An entry bundle is authenticated by its
level-0 tile: the RFC 6962 leaf hash of each entry is the tile's hash at its place.

With the tiles of the new tree, the root of any older size n <= N is recomputed too (its complete
subtrees are complete in N): if it is not the root the monitor kept for n, the log rewrote its
history. No consistency proof is needed, and a tile is fetched once per tree.

Tiles come from `fetch` (the caller's I/O); refusals are VerificationError with the reasons below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flopwatch import merkle
from flopwatch.errors import VerificationError
from flopwatch.merkle import EMPTY_ROOT, HASH_SIZE
from flopwatch.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, TileRef, decode_tile

# The log serves tiles that do not hash to its checkpoint's root (or a full tile that does not
# hash to its parent's hash): a tampered tile, or tiles of another tree.
TILES_DISAGREE = "tiles_disagree_with_checkpoint"
# An entry bundle whose entries do not hash to the level-0 tile: a tampered entry.
ENTRY_NOT_IN_TREE = "entry_not_in_tree"
# The new tree's tiles give another root for a size the monitor kept: history was rewritten.
HISTORY_REWRITTEN = "history_rewritten"

Fetch = Callable[[TileRef], bytes]


def tile_ref(size: int, level: int | None, index: int) -> TileRef:
    """Tile `index` of `level` (None: entry bundle) in a tree of `size`, full or partial."""
    count = size >> (TILE_HEIGHT * (level or 0))
    width = min(TILE_WIDTH, count - index * TILE_WIDTH)
    if width <= 0:
        raise ValueError(f"a tree of {size} has no tile {index} at level {level}")
    return TileRef(level, index, width)


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The hash of a complete subtree from its 2^r hashes one tile level down."""
    return merkle.root_hash(hashes)


class TreeTiles:
    """The tiles of the tree (`size`, `root`), fetched on demand and checked before use.

    Construction fetches the partial tiles and checks the root (raises TILES_DISAGREE)."""

    def __init__(self, size: int, root: bytes, fetch: Fetch) -> None:
        self.size = size
        self.root = root
        self._fetch = fetch
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self._trusted: set[tuple[int, int]] = set()
        self.fetched = 0
        self._checking = size > 0
        if size == 0:
            if root != EMPTY_ROOT:
                raise VerificationError(TILES_DISAGREE, "an empty tree has another root")
            return
        got = self._mth(0, size)
        if got != root:
            raise VerificationError(
                TILES_DISAGREE, f"the tiles of tree {size} do not hash to its checkpoint's root"
            )
        # Every partial tile's hashes went into that root: they are authenticated now.
        self._trusted.update(k for k in self._tiles if self._partial(*k))
        self._checking = False

    def _partial(self, level: int, index: int) -> bool:
        return tile_ref(self.size, level, index).width < TILE_WIDTH

    def _raw(self, level: int, index: int) -> list[bytes]:
        key = (level, index)
        hashes = self._tiles.get(key)
        if hashes is None:
            ref = tile_ref(self.size, level, index)
            hashes = decode_tile(self._fetch(ref), ref.width)
            self.fetched += 1
            self._tiles[key] = hashes
        return hashes

    def tile(self, level: int, index: int) -> list[bytes]:
        """Tile (level, index)'s hashes, authenticated up to the root."""
        key = (level, index)
        if key in self._trusted:
            return self._tiles[key]
        hashes = self._raw(level, index)
        if self._partial(level, index):  # every partial tile was trusted by the root check
            raise AssertionError(f"partial tile {level}/{index} was not in the root")
        parent = self.tile(level + 1, index // TILE_WIDTH)[index % TILE_WIDTH]
        if _perfect_root(hashes) != parent:
            raise VerificationError(
                TILES_DISAGREE,
                f"tile {level}/{index} of tree {self.size} does not hash to its parent's hash",
            )
        self._trusted.add(key)
        return hashes

    def _node(self, k: int, i: int) -> bytes:
        """The hash of the complete subtree of 2^k leaves at index i (leaves [i*2^k, ...))."""
        level, r = divmod(k, TILE_HEIGHT)
        first = i << r
        index, offset = divmod(first, TILE_WIDTH)
        # While the root is being checked, only partial tiles are read, not yet trusted.
        get = self._raw if self._checking else self.tile
        hashes = get(level, index)[offset : offset + (1 << r)]
        if len(hashes) != 1 << r:  # cannot happen for a complete subtree; guard the slice
            raise VerificationError(TILES_DISAGREE, f"tile {level}/{index} is too short")
        return _perfect_root(hashes)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self._node(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return merkle.node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def root_of(self, size: int) -> bytes:
        """The root of the tree's first `size` leaves (size <= this tree's), from its tiles."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is outside a tree of {self.size}")
        return EMPTY_ROOT if size == 0 else self._mth(0, size)

    def check_consistent(self, old_size: int, old_root: bytes) -> None:
        """Raise HISTORY_REWRITTEN unless this tree extends the tree (old_size, old_root)."""
        if len(old_root) != HASH_SIZE or self.root_of(old_size) != old_root:
            raise VerificationError(
                HISTORY_REWRITTEN,
                f"tree {self.size} does not extend the kept tree {old_size}: its first "
                f"{old_size} leaves have another root",
            )

    def check_bundle(self, index: int, entries: Sequence[bytes]) -> None:
        """Raise ENTRY_NOT_IN_TREE unless `entries` are exactly entry bundle `index`'s leaves."""
        hashes = self.tile(0, index)
        if len(entries) != len(hashes):
            raise VerificationError(
                ENTRY_NOT_IN_TREE, f"bundle {index} holds {len(entries)} entries, not {len(hashes)}"
            )
        for n, (entry, h) in enumerate(zip(entries, hashes, strict=True)):
            if merkle.leaf_hash(entry) != h:
                raise VerificationError(
                    ENTRY_NOT_IN_TREE,
                    f"entry {index * TILE_WIDTH + n} does not hash to its leaf in tree {self.size}",
                )
