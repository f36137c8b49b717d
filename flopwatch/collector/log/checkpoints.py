"""The collector's log as C2SP checkpoints and tlog-tiles, read from its store.

The same RFC 6962 tree as `translog` (same leaves, same roots): a checkpoint of size n carries
the root a SignedTreeHead of size n carries, so old tree heads and new checkpoints are checked
against each other with an ordinary consistency proof. The log signs checkpoints with the
collector key as an Ed25519 note key named after the origin; Ed25519 is deterministic, so the
checkpoint of a size is the same bytes whenever it is signed and none needs storing.

A tile is read from the stored subtree hashes (node (8L, N*256 + i) is hash i of tile L/N); an
entry bundle from the stored envelopes. The checkpoint last published (with its witnesses'
cosignatures, which cannot be made again) is kept in the store. Use on the store's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import LogStore
from flopwatch.errors import LogRangeError, VerificationError
from flopwatch.keys import SigningKey, short_key_id
from flopwatch.tlog.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint, sign_checkpoint
from flopwatch.tlog.note import Ed25519NoteSigner, Note
from flopwatch.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, TileRef, encode_bundle, encode_tile

log = logging.getLogger(__name__)


def default_origin(key: SigningKey) -> str:
    """An origin unique to the collector key, for an operator who names none."""
    return f"flopwatch.invalid/log-{short_key_id(key.key_id)}"


def fits(ref: TileRef, size: int) -> bool:
    """Whether a tree of `size` holds every hash or entry of `ref`."""
    count = size >> (TILE_HEIGHT * (ref.level or 0))
    return ref.index * TILE_WIDTH + ref.width <= count


class TileLog:
    """Checkpoints, consistency proofs, tiles and entry bundles of a store's log."""

    def __init__(self, store: LogStore, key: SigningKey, origin: str) -> None:
        self._store = store
        self._log = TransparencyLog(store, key)
        self.signer = Ed25519NoteSigner(origin, key.private_key)

    @property
    def origin(self) -> str:
        return self.signer.name

    def size(self) -> int:
        return self._store.log_size()

    def checkpoint(self, size: int | None = None) -> tuple[Checkpoint, Note]:
        """The log-signed checkpoint of `size` (default: the log as it is now)."""
        size = self._store.log_size() if size is None else size
        checkpoint = Checkpoint(self.origin, size, self._log.root(size))
        return checkpoint, sign_checkpoint(checkpoint, self.signer)

    def keep_published(self, size: int, note: bytes) -> None:
        """Keep the checkpoint of `size` just published, to serve again after a restart."""
        self._store.add_published_checkpoint(self.origin, size, note)

    def published(self) -> tuple[SignedCheckpoint, bytes] | None:
        """The checkpoint kept for this origin and its bytes, if it still holds: signed by this
        log's key, of a tree this store holds, with that tree's root. None (logged) if none is
        kept or it does not hold (a database restored from an older backup, another key)."""
        data = self._store.published_checkpoint(self.origin)
        if data is None:
            return None
        try:
            signed = open_checkpoint(data, [self.signer.verifier], origin=self.origin)
        except VerificationError as e:
            log.warning("the checkpoint kept in the store is not this log's: %s", e)
            return None
        size = signed.checkpoint.size
        if size > self._store.log_size() or self._log.root(size) != signed.checkpoint.root:
            log.warning(
                "the checkpoint of size %d kept in the store does not match the log it holds "
                "(%d entries); it is not served",
                size,
                self._store.log_size(),
            )
            return None
        return signed, data

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        return self._log.consistency_proof(old_size, new_size)

    def read(self, ref: TileRef, size: int) -> bytes:
        """A tile's or entry bundle's bytes in the tree of `size` (at most the log's size).

        Raises LogRangeError when the tree does not hold all of it; VerificationError
        (entry_too_large) for a bundle holding an entry over 65,535 bytes."""
        if size > self._store.log_size() or not fits(ref, size):
            raise LogRangeError(f"{ref.path()} is not in the tree of size {size}")
        span = ref.node_range()
        if ref.is_entries:
            return encode_bundle(self._store.log_entries(span.start, span.stop))
        level = ref.merkle_level
        nodes = self._store.log_nodes({(level, i) for i in span})
        hashes: Sequence[bytes] = [nodes[(level, i)] for i in span]
        return encode_tile(hashes)
