"""The tlog-witness add-checkpoint protocol (c2sp.org/tlog-witness): requests and the checks.

A request body is "old <size>\\n", up to 63 base64 consistency-proof lines, a blank line, then
the signed checkpoint. `judge` is what a witness decides about one, given the log keys it trusts
and the (size, root) it last cosigned for the origin; the HTTP status each refusal maps to is in
`STATUS`. The caller must run `judge` and persist its result atomically (one writer at a time),
or two requests could roll the witness back. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flopwatch.errors import VerificationError
from flopwatch.merkle import BAD_CONSISTENCY, EMPTY_ROOT, HASH_SIZE, verify_consistency
from flopwatch.tlog.checkpoint import MALFORMED as MALFORMED_CHECKPOINT
from flopwatch.tlog.checkpoint import WRONG_ORIGIN, Checkpoint, open_checkpoint, parse_checkpoint
from flopwatch.tlog.note import (
    BAD_SIGNATURE,
    MALFORMED,
    MAX_NOTE_BYTES,
    UNTRUSTED,
    NoteVerifier,
    b64,
    unb64,
)

MAX_PROOF_LINES = 63
# A request: the old size line, 63 proof lines and a checkpoint note.
MAX_REQUEST_BYTES = 64 + MAX_PROOF_LINES * 45 + MAX_NOTE_BYTES
# The 409 answer's media type and a witness answer's bound (signature lines).
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_RESPONSE_BYTES = 16 * 1024

BAD_REQUEST = "bad_add_checkpoint"
UNKNOWN_LOG = "unknown_log"
OLD_SIZE_MISMATCH = "old_size_mismatch"
NOT_EMPTY_ROOT = "bad_empty_root"
ROOT_MISMATCH = "root_mismatch"

# HTTP status a witness answers for each refusal (tlog-witness "add-checkpoint").
STATUS = {
    BAD_REQUEST: 400,
    MALFORMED: 400,
    MALFORMED_CHECKPOINT: 400,
    UNKNOWN_LOG: 404,
    UNTRUSTED: 403,
    BAD_SIGNATURE: 403,
    WRONG_ORIGIN: 403,
    OLD_SIZE_MISMATCH: 409,
    NOT_EMPTY_ROOT: 422,
    ROOT_MISMATCH: 422,
    BAD_CONSISTENCY: 422,
}

_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class TreeState:
    """What a witness keeps per log: the size and root it last cosigned."""

    size: int
    root: bytes


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed note, as sent


def encode_request(old_size: int, proof: Sequence[bytes], checkpoint: bytes) -> bytes:
    head = f"old {old_size}\n" + "".join(b64(h) + "\n" for h in proof) + "\n"
    return head.encode("ascii") + checkpoint


def parse_request(data: bytes) -> AddCheckpoint:
    """Split an add-checkpoint body; refuse a malformed one (400)."""
    if len(data) > MAX_REQUEST_BYTES:
        raise VerificationError(BAD_REQUEST, f"request is {len(data)} bytes, over the limit")
    head, sep, note = data.partition(b"\n\n")
    if not sep:
        raise VerificationError(BAD_REQUEST, "no blank line after the old size and proof")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as e:
        raise VerificationError(BAD_REQUEST, "the old size and proof lines are not ASCII") from e
    m = _OLD.fullmatch(lines[0])
    if m is None:
        raise VerificationError(BAD_REQUEST, "the first line is not 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise VerificationError(BAD_REQUEST, f"more than {MAX_PROOF_LINES} proof lines")
    proof = tuple(unb64(line, BAD_REQUEST, "a proof line") for line in lines[1:])
    if any(len(h) != HASH_SIZE for h in proof):
        raise VerificationError(BAD_REQUEST, "a proof line is not a 32-byte hash")
    return AddCheckpoint(int(m.group(1)), proof, note)


def judge(
    request: AddCheckpoint,
    logs: Mapping[str, Sequence[NoteVerifier]],
    known: Callable[[str], TreeState | None],
) -> Checkpoint:
    """The witness's checks, in the spec's order; the checkpoint to cosign, or a refusal.

    `logs` holds the keys trusted per origin, `known(origin)` the state last cosigned for it
    (None yet: the old size must be 0). Raises VerificationError whose reason `STATUS` maps to
    an HTTP status.
    """
    # 1. A checkpoint of a known log, signed by one of its keys.
    checkpoint, _ = parse_checkpoint(request.checkpoint)
    keys = logs.get(checkpoint.origin)
    if not keys:
        raise VerificationError(UNKNOWN_LOG, f"no log {checkpoint.origin[:80]!r} is known here")
    open_checkpoint(request.checkpoint, keys, origin=checkpoint.origin)
    # 2. The old size is at most the new one, and is the size last cosigned.
    if request.old_size > checkpoint.size:
        raise VerificationError(BAD_REQUEST, "old size is larger than the checkpoint's")
    state = known(checkpoint.origin) or TreeState(0, EMPTY_ROOT)
    if request.old_size != state.size:
        raise VerificationError(
            OLD_SIZE_MISMATCH, f"old size {request.old_size}; the witness has {state.size}"
        )
    # 3. The empty tree's root is SHA-256 of nothing.
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        raise VerificationError(NOT_EMPTY_ROOT, "a checkpoint of size 0 has another root")
    # 4. The new tree extends the old one.
    if state.size == checkpoint.size and state.root != checkpoint.root:
        raise VerificationError(ROOT_MISMATCH, "same size as cosigned before, another root")
    verify_consistency(
        old_size=state.size,
        new_size=checkpoint.size,
        old_root=state.root,
        new_root=checkpoint.root,
        proof=request.proof,
    )
    return checkpoint


def parse_conflict_size(body: bytes) -> int:
    """The witness's size from a 409 answer: decimal and a newline."""
    m = re.fullmatch(rb"(0|[1-9][0-9]{0,19})\n", body[:32])
    if m is None:
        raise VerificationError(BAD_REQUEST, "a 409 answer's body is not '<size>\\n'")
    return int(m.group(1))
