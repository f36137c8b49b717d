"""tlog-tiles (c2sp.org/tlog-tiles): tile paths, which tiles a tree has, tile and bundle encoding.

A tile at level L, index N holds up to 256 consecutive Merkle tree hashes: hash i is the RFC 6962
MTH of leaves [(N*256 + i) * 256^L, (N*256 + i + 1) * 256^L), i.e. the complete subtree at Merkle
level 8L, index N*256 + i. A full tile has 256 hashes (8,192 bytes); the rightmost tiles of a tree
are partial, `.p/<W>` with W from 1 to 255. Entry bundles hold the leaves themselves, each as a
big-endian uint16 length and its bytes, so an entry is at most 65,535 bytes (MAX_ENTRY_BYTES).

In flopwatch an entry is one accepted record: the exact DSSE envelope bytes the collector stored
(the RFC 6962 leaf data of its log since the start). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flopwatch.errors import VerificationError
from flopwatch.merkle import HASH_SIZE, MAX_TREE_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
# The spec's bound: an entry's length is a uint16.
MAX_ENTRY_BYTES = 0xFFFF
# A full entry bundle's bytes: 256 entries of the largest size and their length prefixes.
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)

BAD_PATH = "bad_tile_path"
BAD_TILE = "malformed_tile"
BAD_BUNDLE = "malformed_entry_bundle"
ENTRY_TOO_LARGE = "entry_too_large"

_INDEX = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


@dataclass(frozen=True)
class TileRef:
    """A tile (level 0..63) or an entry bundle (level None) of `width` hashes or entries."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def is_entries(self) -> bool:
        return self.level is None

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def merkle_level(self) -> int:
        """The Merkle level of the hashes in this tile (0 for entry bundles: leaves)."""
        return TILE_HEIGHT * (self.level or 0)

    def node_range(self) -> range:
        """Indices, at `merkle_level`, of the subtree hashes (or leaves) this tile holds."""
        start = self.index * TILE_WIDTH
        return range(start, start + self.width)

    def path(self) -> str:
        level = "entries" if self.level is None else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{index_path(self.index)}{suffix}"


def index_path(index: int) -> str:
    """A tile index as 3-digit path elements, all but the last prefixed 'x' (1234067 ->
    x001/x234/067)."""
    if index < 0:
        raise ValueError(f"tile index {index} is negative")
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(parts))


def parse_tile_path(path: str) -> TileRef:
    """Parse "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]" (no leading slash), strictly:
    no leading zeros but the index's, level 0..63, width 1..255."""
    if len(path) > 200 or not path.startswith("tile/"):
        raise VerificationError(BAD_PATH, "not a tile path")
    rest = path[len("tile/") :]
    level_text, sep, rest = rest.partition("/")
    if not sep:
        raise VerificationError(BAD_PATH, "a tile path has a level and an index")
    width = TILE_WIDTH
    index_text, partial, width_text = rest.partition(".p/")
    if partial:
        if not _WIDTH.fullmatch(width_text) or not 1 <= int(width_text) < TILE_WIDTH:
            raise VerificationError(BAD_PATH, "a partial tile's width is 1 to 255")
        width = int(width_text)
    if not _INDEX.fullmatch(index_text):
        raise VerificationError(BAD_PATH, "a tile index is 3-digit elements, x-prefixed but last")
    index = int("".join(p.lstrip("x") for p in index_text.split("/")))
    if level_text == "entries":
        return TileRef(None, index, width)
    if not _LEVEL.fullmatch(level_text) or int(level_text) > MAX_LEVEL:
        raise VerificationError(BAD_PATH, "a tile level is 0 to 63 with no leading zero")
    return TileRef(int(level_text), index, width)


def level_tiles(old_size: int, new_size: int, level: int | None) -> list[TileRef]:
    """The tiles of one level (None: entry bundles) that a tree of `new_size` has and one of
    `old_size` had not, left to right: the full ones, then the partial one (a partial tile that
    grew is new at its new width). `level_tiles(0, size, level)` is all of the level's tiles."""
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ValueError(f"need 0 <= old size ({old_size}) <= new size ({new_size})")
    shift = TILE_HEIGHT * (level or 0)
    old_count, new_count = old_size >> shift, new_size >> shift  # hashes at this tile level
    if old_count == new_count:
        return []
    full, width = divmod(new_count, TILE_WIDTH)
    out = [TileRef(level, i) for i in range(old_count // TILE_WIDTH, full)]
    if width:
        out.append(TileRef(level, full, width))
    return out


def levels_of(size: int) -> range:
    """The tile levels a tree of `size` has tiles at (none for the empty tree)."""
    top = 0
    while size >> (TILE_HEIGHT * (top + 1)):
        top += 1
    return range(top + 1) if size else range(0)


def new_tiles(old_size: int, new_size: int) -> list[TileRef]:
    """Tiles and entry bundles a tree of `new_size` has that one of `old_size` had not: entry
    bundles first, then tile levels bottom up. Costs O(new tiles), not O(tree)."""
    out: list[TileRef] = []
    for level in (None, *levels_of(new_size)):
        out.extend(level_tiles(old_size, new_size, level))
    return out


# --- Encoding -------------------------------------------------------------------------------


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError("a tile is 1 to 256 hashes of 32 bytes")
    return b"".join(hashes)


def decode_tile(data: bytes, width: int) -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise VerificationError(BAD_TILE, f"tile is {len(data)} bytes, expected {32 * width}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries as uint16-length-prefixed bytes; an entry over 65,535 bytes cannot be encoded."""
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_BYTES:
            raise VerificationError(
                ENTRY_TOO_LARGE,
                f"entry {i} is {len(entry)} bytes; tlog-tiles entries are at most "
                f"{MAX_ENTRY_BYTES}",
            )
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, width: int) -> list[bytes]:
    """Exactly `width` entries and nothing after them."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise VerificationError(BAD_BUNDLE, f"bundle is {len(data)} bytes, over the bound")
    out: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise VerificationError(BAD_BUNDLE, "bundle ends inside a length prefix")
        n = int.from_bytes(data[at : at + 2], "big")
        if at + 2 + n > len(data):
            raise VerificationError(BAD_BUNDLE, f"entry {len(out)} runs past the bundle's end")
        out.append(data[at + 2 : at + 2 + n])
        at += 2 + n
        if len(out) > width:
            raise VerificationError(BAD_BUNDLE, f"bundle holds more than {width} entries")
    if len(out) != width:
        raise VerificationError(BAD_BUNDLE, f"bundle holds {len(out)} entries, not {width}")
    return out
