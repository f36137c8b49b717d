"""A tlog-witness (c2sp.org/tlog-witness) for flopwatch logs, or any log of Ed25519 checkpoints.

    POST /add-checkpoint             check, persist, answer the cosignature line
    GET  /<sha256(origin) hex>/checkpoint   the last checkpoint cosigned for that log

Checking a request and recording its outcome happen under one lock, so two requests can never
roll the witness back; the new state is durable (`WitnessState`) before the answer is sent.
Refusals follow the spec: 400 malformed, 403 no valid signature by a trusted log key, 404 an
unknown origin, 409 another old size (body: the size held, `text/x.tlog.size`), 422 a checkpoint
inconsistent with the one cosigned before (logged as a warning: it may be evidence of a log
that forked or rewrote history).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from flopwatch.errors import VerificationError
from flopwatch.httpserve import BoundedHandler
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Note, NoteVerifier, parse_note
from flopwatch.tlog.witness import (
    SIZE_CONTENT_TYPE,
    STATUS,
    TreeState,
    judge,
    parse_request,
)
from flopwatch.witness.state import WitnessState

log = logging.getLogger(__name__)

_ORIGIN_HASH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class Witness:
    """The witness's decisions: which logs it follows, its key, its durable state."""

    def __init__(
        self,
        *,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[NoteVerifier]],
        state: WitnessState,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.logs = dict(logs)
        self._state = state
        self._now = now
        self._lock = threading.Lock()
        self._by_hash = {hashlib.sha256(o.encode()).hexdigest(): o for o in self.logs}

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for one add-checkpoint request."""
        try:
            request = parse_request(body)
        except VerificationError as e:
            return 400, "text/plain; charset=utf-8", f"{e}\n".encode()
        with self._lock:
            try:
                checkpoint = judge(request, self.logs, self._state.get)
            except VerificationError as e:
                return self._refusal(e, request.checkpoint)
            timestamp = max(1, int(self._now()))
            sig = self.cosigner.cosign(checkpoint.body(), timestamp)
            note = parse_note(request.checkpoint)
            kept = Note(note.text, (*note.signatures, sig)).to_bytes()
            self._state.put(checkpoint.origin, TreeState(checkpoint.size, checkpoint.root), kept)
        log.info("cosigned %s at size %d", checkpoint.origin, checkpoint.size)
        return 200, "text/plain; charset=utf-8", sig.line().encode("utf-8")

    def _refusal(self, e: VerificationError, checkpoint: bytes) -> tuple[int, str, bytes]:
        status = STATUS.get(e.reason, 400)
        if status == 409:
            origin = checkpoint.split(b"\n", 1)[0].decode("utf-8", "replace")
            held = self._state.get(origin)
            return 409, SIZE_CONTENT_TYPE, f"{0 if held is None else held.size}\n".encode()
        if status == 422:
            log.warning("refused an inconsistent checkpoint: %s", e)
        else:
            log.info("refused a checkpoint (%d): %s", status, e)
        return status, "text/plain; charset=utf-8", f"{e}\n".encode()

    def latest(self, origin_hash: str) -> bytes | None:
        origin = self._by_hash.get(origin_hash)
        return None if origin is None else self._state.checkpoint(origin)


def witness_handler(witness: Witness) -> type[BoundedHandler]:
    class WitnessHandler(BoundedHandler):
        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self.answer(404, b"not found\n")
                return
            body = self.read_body()
            if body is None:
                return
            status, content_type, answer = witness.add_checkpoint(body)
            self.answer(status, answer, content_type=content_type)

        def do_GET(self) -> None:
            m = _ORIGIN_HASH.fullmatch(self.path)
            data = None if m is None else witness.latest(m.group(1))
            if data is None:
                self.answer(404, b"no checkpoint cosigned for that log\n")
                return
            self.answer(200, data, headers={"Cache-Control": "max-age=60"})

    return WitnessHandler
