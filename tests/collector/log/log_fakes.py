"""An in-memory LogStore for the tiles and witnessing tests: leaves and their subtree nodes, built
the way a store builds them (translog.append), so thousands of leaves cost milliseconds."""

from __future__ import annotations

from collections.abc import Collection

from flopwatch import merkle
from flopwatch.collector.log import translog
from flopwatch.collector.store import common
from flopwatch.errors import StoreError


class MemoryLog:
    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.heads: dict[int, bytes] = {}
        self.published: dict[str, tuple[int, bytes]] = {}
        self.entry_reads = 0

    def add(self, *entries: bytes) -> None:
        size = len(self.leaves)
        edge = {k: self.nodes[k] for k in translog.edge(size)}
        self.nodes.update(translog.append(size, edge, [merkle.leaf_hash(e) for e in entries]))
        self.leaves.extend(entries)

    def grow_to(self, size: int) -> None:
        self.add(*(f"entry {i}".encode() for i in range(len(self.leaves), size)))

    # -- LogStore -----------------------------------------------------------------------------
    def log_size(self) -> int:
        return len(self.leaves)

    def log_nodes(self, nodes: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return common.all_log_nodes(nodes, {n: self.nodes[n] for n in nodes if n in self.nodes})

    def log_entries(self, start: int, end: int) -> list[bytes]:
        if not 0 <= start <= end <= len(self.leaves):
            raise StoreError("leaves out of range")
        self.entry_reads += 1
        return self.leaves[start:end]

    def add_tree_head(self, tree_size: int, timestamp_ns: int, envelope: bytes) -> None:
        self.heads.setdefault(tree_size, envelope)

    def latest_tree_head(self) -> bytes | None:
        return self.heads[max(self.heads)] if self.heads else None

    def add_published_checkpoint(self, origin: str, tree_size: int, note: bytes) -> None:
        held = self.published.get(origin)
        if held is None or tree_size >= held[0]:
            self.published[origin] = (tree_size, note)

    def published_checkpoint(self, origin: str) -> bytes | None:
        held = self.published.get(origin)
        return None if held is None else held[1]
