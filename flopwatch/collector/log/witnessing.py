"""Getting a checkpoint cosigned by witnesses (c2sp.org/tlog-witness) under a k-of-n policy.

For each witness the collector remembers the size the witness last cosigned (unknown after a
start: it asks with old size 0 and learns the size from the 409 answer). Each round sends the
new checkpoint to every witness at once, with a consistency proof from that size:

  200  signature lines: the witness's cosignature is checked and kept; its size is the new one
  409  the witness holds another size (body "<size>\\n"): once, ask again from that size
  422  the witness finds the checkpoint inconsistent with what it saw: a split view or a rewritten
       history. Logged as an error with the witness's name; never retried blindly
  403  the witness does not trust the log key; 404 it does not know the origin: configuration
  400, other statuses, timeouts, refused connections: logged, tried again next round

The checkpoint is published (with the log's signature and the cosignatures) only when the
cosignatures meet the policy's quorum.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flopwatch.errors import ConfigError, FlopwatchError, VerificationError
from flopwatch.tlog.checkpoint import Checkpoint
from flopwatch.tlog.note import Note, Signature, decode_note_bytes, parse_signature_lines
from flopwatch.tlog.policy import Policy, Witness
from flopwatch.tlog.witness import (
    MAX_RESPONSE_BYTES,
    encode_request,
    parse_conflict_size,
)

log = logging.getLogger(__name__)

# Seconds one add-checkpoint request may take (connect, send, answer).
DEFAULT_WITNESS_TIMEOUT_S = 10.0

# old size -> consistency proof from it to the checkpoint's size (read on the store's thread)
ProofSource = Callable[[int], Sequence[bytes]]


@dataclass
class WitnessOutcome:
    """What one witness answered this round."""

    name: str
    status: int | None  # HTTP status; None when no answer came
    cosignature: Signature | None = None
    detail: str = ""


@dataclass
class WitnessClient:
    """One witness of the policy: where to send, which key to expect, the size it holds."""

    witness: Witness
    timeout_s: float = DEFAULT_WITNESS_TIMEOUT_S
    known_size: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.witness.name

    def _post(self, body: bytes) -> tuple[int, bytes]:
        url = (self.witness.url or "").rstrip("/") + "/add-checkpoint"
        request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310
        request.add_header("Content-Type", "text/plain; charset=utf-8")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:  # noqa: S310
                return int(r.status), r.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            with e:
                return int(e.code), e.read(MAX_RESPONSE_BYTES + 1)

    def add_checkpoint(
        self, checkpoint: Checkpoint, note: Note, proof: ProofSource
    ) -> WitnessOutcome:
        """Ask for a cosignature of `checkpoint` (signed by the log in `note`)."""
        with self._lock:  # one request at a time per witness: its size is this client's state
            old = 0 if self.known_size is None else self.known_size
            for attempt in range(2):
                if old > checkpoint.size:
                    return WitnessOutcome(
                        self.name, 409, detail=f"the witness holds size {old}, beyond ours"
                    )
                body = encode_request(old, proof(old), note.to_bytes())
                try:
                    status, answer = self._post(body)
                except (OSError, ValueError) as e:
                    return WitnessOutcome(self.name, None, detail=f"no answer: {e}")
                if status == 409 and attempt == 0:
                    try:
                        old = self.known_size = parse_conflict_size(answer)
                    except VerificationError as e:
                        return WitnessOutcome(self.name, 409, detail=e.message)
                    continue
                return self._outcome(status, answer, checkpoint)
        raise AssertionError("unreachable")  # pragma: no cover

    def _outcome(self, status: int, answer: bytes, checkpoint: Checkpoint) -> WitnessOutcome:
        text = answer[:300].decode("utf-8", "replace").strip()
        if status != 200:
            return WitnessOutcome(self.name, status, detail=text)
        try:
            lines = parse_signature_lines(decode_note_bytes(answer, MAX_RESPONSE_BYTES))
        except VerificationError as e:
            return WitnessOutcome(self.name, status, detail=f"bad answer: {e.message}")
        sig = self.cosignature_in(checkpoint, lines)
        if sig is not None:
            self.known_size = checkpoint.size
            return WitnessOutcome(self.name, status, cosignature=sig)
        return WitnessOutcome(self.name, status, detail="no valid cosignature by its key")

    def cosignature_in(
        self, checkpoint: Checkpoint, signatures: Sequence[Signature]
    ) -> Signature | None:
        """This witness's valid cosignature of `checkpoint` among `signatures`, if any."""
        verifier = self.witness.verifier
        body = checkpoint.body().encode("utf-8")
        for sig in signatures:
            if (sig.name, sig.key_id) == (verifier.name, verifier.key_id) and verifier.verify(
                body, sig.sig
            ):
                return sig
        return None


class Witnessing:
    """Sends checkpoints to a policy's witnesses and says when the quorum cosigned."""

    def __init__(self, policy: Policy, *, timeout_s: float = DEFAULT_WITNESS_TIMEOUT_S) -> None:
        missing = [w.name for w in policy.witnesses.values() if not w.url]
        if missing:
            raise ConfigError(f"witnesses {', '.join(missing)} have no URL in the policy")
        self.policy = policy
        self.clients = [WitnessClient(w, timeout_s) for w in policy.witnesses.values()]
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.clients)), thread_name_prefix="flopwatch-witness"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def resume(self, checkpoint: Checkpoint, note: Note) -> bool:
        """Take up a checkpoint published before a restart: whether its cosignatures meet the
        policy. The witnesses that cosigned it are known to hold its size (no 409 round next
        time)."""
        cosigned = [c for c in self.clients if c.cosignature_in(checkpoint, note.signatures)]
        for c in cosigned:
            c.known_size = checkpoint.size
        return self.policy.satisfied({c.name for c in cosigned})

    def cosign(
        self, checkpoint: Checkpoint, note: Note, proof: ProofSource
    ) -> tuple[Note | None, list[WitnessOutcome]]:
        """Ask every witness; the note with the cosignatures if they meet the quorum, else None."""
        futures = [
            self._pool.submit(c.add_checkpoint, checkpoint, note, proof) for c in self.clients
        ]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except FlopwatchError as e:  # a proof the store could not read
                outcomes.append(WitnessOutcome("?", None, detail=str(e)))
        for o in outcomes:
            _report(o, checkpoint)
        cosigned = [o for o in outcomes if o.cosignature is not None]
        if not self.policy.satisfied({o.name for o in cosigned}):
            return None, outcomes
        sigs: Sequence[Signature] = [o.cosignature for o in cosigned if o.cosignature]
        return Note(note.text, (*note.signatures, *sigs)), outcomes


def _report(o: WitnessOutcome, checkpoint: Checkpoint) -> None:
    where = f"witness {o.name} on checkpoint {checkpoint.size}"
    if o.cosignature is not None:
        log.debug("%s: cosigned", where)
    elif o.status == 422:
        log.error(
            "%s: REFUSED AS INCONSISTENT with what it saw before (a split view or a rewritten "
            "log): %s",
            where,
            o.detail,
        )
    elif o.status in (403, 404):
        log.error(
            "%s: refused (%d: the witness does not trust this log): %s", where, o.status, o.detail
        )
    else:
        log.warning("%s: no cosignature (%s): %s", where, o.status or "no answer", o.detail)
