"""A records archive file (proto/flopwatch/v1/bundle.proto, `ArchiveHeader`): written by
`flopwatch records archive`, read back by `records prune` and `report --archive`.

The file is a stream, so an archive of any size is written and read in bounded memory: each
message is preceded by its length (4 bytes, big-endian); first one ArchiveHeader (media type, a
signed tree head, the node keys, the cut-off, the entry count), then that many LoggedEnvelope
(leaf index, envelope bytes, inclusion proof against the header's tree head), ascending by leaf.

`read_archive` checks as it reads: the framing and every size limit before a message is parsed,
the tree head's signature by the collector key the caller expects, each entry's inclusion
proof (so every envelope is exactly the logged leaf), ascending leaves, and the count (a
truncated file fails at its end). An error is a ConfigError naming the file and what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.statements import SignedTreeHead, parse_message
from flopwatch.v1 import bundle_pb2
from flopwatch.verify.bundle_format import DEFAULT_BUNDLE_LIMITS, Entry, NodeKey

ARCHIVE_MEDIA_TYPE = "application/vnd.flopwatch.archive.v1+protobuf"
# One LoggedEnvelope: an envelope at its limit, its leaf index and an audit path of 64 hashes.
MAX_ARCHIVE_ENTRY_BYTES = DEFAULT_LIMITS.max_envelope_bytes + 64 * 1024
# The header: a tree head and up to BundleLimits.max_nodes node keys (~150 bytes each).
MAX_ARCHIVE_HEADER_BYTES = 32 << 20
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class ArchiveHeader:
    tree_head: SignedTreeHead
    nodes: tuple[NodeKey, ...]
    before_ns: int
    entries: int

    def to_bytes(self) -> bytes:
        return bundle_pb2.ArchiveHeader(
            media_type=ARCHIVE_MEDIA_TYPE,
            tree_head=self.tree_head.envelope.to_message(),
            nodes=[n.to_message() for n in self.nodes],
            before_unix_ns=self.before_ns,
            entries=self.entries,
        ).SerializeToString(deterministic=True)


def write_frame(out: BinaryIO, data: bytes) -> None:
    out.write(_LENGTH.pack(len(data)))
    out.write(data)


def entry_bytes(entry: Entry) -> bytes:
    return bundle_pb2.LoggedEnvelope(
        leaf_index=entry.leaf_index, envelope=entry.envelope, inclusion_proof=entry.proof
    ).SerializeToString(deterministic=True)


class ArchiveReader:
    """An archive file opened for one pass: `header`, then `entries()` (checked as read)."""

    def __init__(self, path: Path, f: BinaryIO, *, collector_key_id: str) -> None:
        self._path = path
        self._f = f
        data = self._frame(MAX_ARCHIVE_HEADER_BYTES, "the header")
        if data is None:
            raise self._error("is empty: not a records archive")
        try:
            m = parse_message(bundle_pb2.ArchiveHeader(), data, "malformed", "archive header")
            if m.media_type != ARCHIVE_MEDIA_TYPE:
                raise self._error(f"is not a records archive (media type {m.media_type[:80]!r})")
            head = SignedTreeHead.from_envelope(Envelope.from_message(m.tree_head))
            head.verify()
            nodes = tuple(NodeKey.from_message(n, DEFAULT_BUNDLE_LIMITS) for n in m.nodes)
        except VerificationError as e:
            raise self._error(f"has a bad header: {e.message}") from e
        if head.head.log_id != collector_key_id:
            raise self._error(
                f"is signed by collector key {short_key_id(head.head.log_id)}, not by this "
                f"collector's ({short_key_id(collector_key_id)})"
            )
        self.header = ArchiveHeader(head, nodes, m.before_unix_ns, m.entries)

    def _error(self, what: str) -> ConfigError:
        return ConfigError(f"archive {self._path} {what}")

    def _frame(self, limit: int, what: str) -> bytes | None:
        prefix = self._f.read(_LENGTH.size)
        if not prefix:
            return None
        if len(prefix) < _LENGTH.size:
            raise self._error(f"is truncated in the length of {what}")
        (n,) = _LENGTH.unpack(prefix)
        if n > limit:
            raise self._error(f"declares {what} of {n} bytes, limit {limit}")
        data = self._f.read(n)
        if len(data) < n:
            raise self._error(f"is truncated in {what}")
        return data

    def entries(self) -> Iterator[Entry]:
        """Every entry, in order, each proven to be its leaf of the header's tree head."""
        head = self.header.tree_head.head
        previous = -1
        for n in range(self.header.entries):
            data = self._frame(MAX_ARCHIVE_ENTRY_BYTES, f"entry {n}")
            if data is None:
                raise self._error(f"ends after {n} of its {self.header.entries} entries")
            try:
                m = parse_message(bundle_pb2.LoggedEnvelope(), data, "malformed", "entry")
                if m.leaf_index <= previous:
                    raise self._error(f"entry {n}: leaf {m.leaf_index} after leaf {previous}")
                verify_inclusion(
                    leaf_index=m.leaf_index,
                    tree_size=head.size,
                    leaf_hash=leaf_hash(m.envelope),
                    proof=list(m.inclusion_proof),
                    root=head.root,
                )
            except VerificationError as e:
                raise self._error(f"entry {n}: {e.message}") from e
            previous = m.leaf_index
            yield Entry(m.leaf_index, m.envelope, tuple(m.inclusion_proof))
        if self._f.read(1):
            raise self._error(f"holds more than the {self.header.entries} entries it declares")


def envelopes_from(path: Path, leaves: Sequence[int], *, collector_key_id: str) -> dict[int, bytes]:
    """The envelope bytes an archive holds for `leaves` (those it holds), read in one pass."""
    wanted = set(leaves)
    out: dict[int, bytes] = {}
    try:
        with path.open("rb") as f:
            reader = ArchiveReader(path, f, collector_key_id=collector_key_id)
            for e in reader.entries():
                if e.leaf_index in wanted:
                    out[e.leaf_index] = e.envelope
    except OSError as e:
        raise ConfigError(f"cannot read archive {path}: {e.strerror}") from e
    return out
