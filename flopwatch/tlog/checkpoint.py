"""C2SP checkpoints (c2sp.org/tlog-checkpoint): a log's tree head as a signed note.

The note text is three lines: the origin (the log's name), the tree size in decimal with no
leading zero, and the base64 RFC 6962 root hash; then optional extension lines, which flopwatch
never writes and keeps opaque when it reads them. The log signs with an Ed25519 note key whose
name is the origin. The root is the same RFC 6962 root a flopwatch SignedTreeHead of the same
size carries (`flopwatch.merkle`), so heads from before checkpoints existed stay checkable
against checkpoints with an ordinary consistency proof. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from flopwatch.errors import VerificationError
from flopwatch.merkle import HASH_SIZE, MAX_TREE_SIZE
from flopwatch.tlog.note import (
    Ed25519NoteSigner,
    Note,
    NoteVerifier,
    Signature,
    b64,
    check_key_name,
    open_note,
    parse_note,
    unb64,
)

MALFORMED = "malformed_checkpoint"
WRONG_ORIGIN = "wrong_checkpoint_origin"
# Extension lines kept from a checkpoint read from outside.
MAX_EXTENSION_LINES = 16

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """A log's origin, tree size and root hash (and any extension lines, opaque)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_key_name(self.origin, MALFORMED)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise VerificationError(MALFORMED, f"tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise VerificationError(MALFORMED, f"root hash is {len(self.root)} bytes, not 32")
        if any(not line or "\n" in line for line in self.extensions):
            raise VerificationError(MALFORMED, "an extension line is empty or holds a newline")

    def body(self) -> str:
        """The note text: the lines above, each ending in a newline."""
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a note text as a checkpoint; refuse anything the spec does not allow."""
        if not text.endswith("\n"):
            raise VerificationError(MALFORMED, "checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError(MALFORMED, "a checkpoint has origin, size and root lines")
        origin, size, root, *extensions = lines
        if len(extensions) > MAX_EXTENSION_LINES:
            raise VerificationError(MALFORMED, f"over {MAX_EXTENSION_LINES} extension lines")
        if not _SIZE.fullmatch(size) or int(size) > MAX_TREE_SIZE:
            raise VerificationError(MALFORMED, f"tree size line {size[:40]!r} is not a size")
        return cls(origin, int(size), unb64(root, MALFORMED, "root hash"), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Ed25519NoteSigner) -> Note:
    """The log's signed note of `checkpoint`; the key name must be the origin."""
    if signer.name != checkpoint.origin:
        raise ValueError(f"log key name {signer.name!r} is not the origin {checkpoint.origin!r}")
    return Note(checkpoint.body(), (signer.sign(checkpoint.body()),))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature verified, with every signature line it carried."""

    checkpoint: Checkpoint
    note: Note
    log_signatures: tuple[Signature, ...]


def parse_checkpoint(data: bytes) -> tuple[Checkpoint, Note]:
    """Format only: a signed note whose text is a checkpoint (no signature is checked)."""
    note = parse_note(data)
    return Checkpoint.from_body(note.text), note


def open_checkpoint(
    data: bytes, log_keys: Sequence[NoteVerifier], *, origin: str | None = None
) -> SignedCheckpoint:
    """Verify a checkpoint signed by one of `log_keys` (ignoring other signatures).

    1. The note parses and a log key's signature verifies; a failing log signature refuses it.
    2. The text is a checkpoint; its origin is `origin` when given, and a log key's name.
    """
    note, good = open_note(data, log_keys)
    checkpoint = Checkpoint.from_body(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(
            WRONG_ORIGIN, f"checkpoint origin {checkpoint.origin[:80]!r} is not {origin[:80]!r}"
        )
    if not any(s.name == checkpoint.origin for s in good):
        raise VerificationError(WRONG_ORIGIN, "no log signature is under the origin's name")
    return SignedCheckpoint(checkpoint, note, tuple(good))
