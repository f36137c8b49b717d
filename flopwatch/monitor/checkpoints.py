"""A fetched checkpoint judged: the log's signature, the policy's cosignatures, and how it relates
to the checkpoint the monitor kept for that log. Pure.

1. The note parses as a C2SP checkpoint of the log's origin, signed by the log key.
2. Every cosignature line by a witness of the policy verifies (one that fails refuses the
   checkpoint); the policy's quorum is met by the witnesses whose cosignature verified.
3. Against the kept (size, root): a smaller tree, or the same size with another root, is a
   rewritten history. A larger tree's consistency is checked from its tiles (`tree_tiles`).
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwatch.errors import VerificationError
from flopwatch.monitor.events import (
    BAD_CHECKPOINT,
    BAD_COSIGNATURE,
    MISSING_COSIGNATURES,
    ROLLBACK,
)
from flopwatch.monitor.tree_tiles import HISTORY_REWRITTEN
from flopwatch.tlog.checkpoint import Checkpoint, open_checkpoint
from flopwatch.tlog.note import NoteVerifier, verified_signatures
from flopwatch.tlog.policy import Policy


@dataclass(frozen=True)
class Kept:
    """The last checkpoint the monitor accepted for a log (size 0: none yet)."""

    size: int
    root: bytes
    note: bytes = b""


@dataclass(frozen=True)
class Witnessed:
    checkpoint: Checkpoint
    witnesses: frozenset[str]  # policy names of the witnesses whose cosignature verified
    note: bytes


def open_witnessed(
    data: bytes, log_key: NoteVerifier, origin: str, policy: Policy | None
) -> Witnessed:
    """Steps 1 and 2; VerificationError(BAD_CHECKPOINT | BAD_COSIGNATURE |
    MISSING_COSIGNATURES) with what was wrong."""
    try:
        opened = open_checkpoint(data, [log_key], origin=origin)
    except VerificationError as e:
        raise VerificationError(BAD_CHECKPOINT, f"{e.reason}: {e.message}") from e
    witnesses: frozenset[str] = frozenset()
    if policy is not None:
        names = {(w.key.name, w.key.key_id): name for name, w in policy.witnesses.items()}
        verifiers = list(policy.cosignature_verifiers().values())
        try:
            good = verified_signatures(opened.note, verifiers)
        except VerificationError as e:
            raise VerificationError(BAD_COSIGNATURE, e.message) from e
        witnesses = frozenset(names[(s.name, s.key_id)] for s in good)
        if not policy.satisfied(witnesses):
            have = ", ".join(sorted(witnesses)) or "none"
            raise VerificationError(
                MISSING_COSIGNATURES,
                f"checkpoint {opened.checkpoint.size} lacks the cosignatures the witness policy "
                f"needs (quorum {policy.quorum!r}; valid cosignatures by: {have})",
            )
    return Witnessed(opened.checkpoint, witnesses, data)


def against_kept(kept: Kept, checkpoint: Checkpoint) -> bool:
    """Step 3 without tiles: True if the tree grew (check it with tiles), False if it is the
    kept tree; VerificationError(ROLLBACK | HISTORY_REWRITTEN) if it cannot extend it."""
    if checkpoint.size < kept.size:
        raise VerificationError(
            ROLLBACK,
            f"checkpoint of size {checkpoint.size} is smaller than the kept {kept.size}",
        )
    if checkpoint.size == kept.size:
        if kept.size and checkpoint.root != kept.root:
            raise VerificationError(
                HISTORY_REWRITTEN, f"checkpoint {checkpoint.size} has another root than kept"
            )
        return False
    return True
