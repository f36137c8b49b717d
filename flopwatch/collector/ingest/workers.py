"""Record verification in worker processes, so that one collector uses more than one core.

Verifying a record (signature, limits, recomputing every FLOP figure) is most of what the
collector spends per GPU interval, and it is pure Python under one GIL. Here it runs in worker
processes, one batch ahead of the store thread (`flopwatch.collector.ingest.pipeline`).

A worker verifies an envelope against the public key its sender PRESENTED on the stream: that
needs no trust decision, so it needs no store. Trust stays on the store thread: the ingestor
uses a record verified here only when the one key it trusts for the envelope is the key that
verified it (key ids are SHA-256 digests of the raw keys), and verifies inline otherwise.
Anything a worker does not verify comes back as None and is verified inline, with the reason the
inline verifier gives; the same happens to a batch whose worker died (it is started again).

Workers are spawned (no fork: the collector runs gRPC threads) and each talks over its own two
pipes, whose other ends only the collector holds, so a worker exits when the collector dies,
however it dies.

What comes back is small on purpose: every read from a pipe gives up the GIL, and the ingest
thread, busy judging and committing, hands it back only at the interpreter's switch interval.
So a worker returns each record less what the collector can parse again from the bytes it holds
(the envelope and its payload: C, a few microseconds), as plain tuples, and the pipes are
widened so that a batch crosses in a few reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing as mp
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.attestation import GapInfo
from flopwatch.dsse import Envelope
from flopwatch.errors import KeyFileError, VerificationError
from flopwatch.keys import public_from_raw
from flopwatch.limits import Limits
from flopwatch.verify.record import RecordVerifier, VerifiedRecord
from flopwatch.verify.sums import RecordSums

log = logging.getLogger(__name__)

_KEY_CACHE_MAX = 100_000  # parsed public keys a worker keeps (one per node key seen)
_PIPE_BYTES = 1 << 20  # Linux lets any process widen a pipe to 1 MiB (fs.pipe-max-size)

# A verified record as a worker sends it: key id, node id, cluster, sequence, digest, previous
# digest, gaps and sums (dicts of plain tuples: pickled in C, a few per record).
_Wire = tuple[str, str, str, int, bytes, bytes, tuple[GapInfo, ...], RecordSums]


def to_wire(r: VerifiedRecord) -> _Wire:
    return (r.key_id, r.node_id, r.cluster, r.sequence, r.digest, r.previous_digest, r.gaps, r.sums)


def from_wire(data: bytes, wire: _Wire, limits: Limits) -> VerifiedRecord:
    """The record a worker verified, whole again: its envelope parsed once more from the bytes
    the collector received (the same bytes the worker verified); its payload only if asked
    for (`VerifiedRecord.attestation`)."""
    key_id, node_id, cluster, sequence, digest, previous, gaps, sums = wire
    envelope = Envelope.from_bytes(data, limits)
    return VerifiedRecord(
        key_id=key_id,
        node_id=node_id,
        cluster=cluster,
        sequence=sequence,
        digest=digest,
        previous_digest=previous,
        envelope=envelope,
        gaps=gaps,
        sums=RecordSums(*sums),
        limits=limits,
    )


class VerifyJob(NamedTuple):
    """One envelope to verify in advance, against the key its stream presented."""

    envelope: bytes
    presented_key: bytes | None
    # The clock when the batch was taken: a later check would allow a few more milliseconds
    # ahead ("future") and as many fewer behind ("too_old", 400 days by default): no matter.
    now_ns: int | None


def verify_presented(
    job: VerifyJob, limits: Limits, keys: dict[bytes, Ed25519PublicKey] | None = None
) -> VerifiedRecord | None:
    """The record, verified against the presented key alone; None when that is not possible
    (no key presented, the envelope not signed by it, or any check failing). Pure but for
    `keys`, a cache of parsed public keys."""
    raw = job.presented_key
    if raw is None:
        return None
    key = keys.get(raw) if keys is not None else None
    if key is None:
        try:
            key = public_from_raw(raw)
        except KeyFileError:
            return None
        if keys is not None:
            if len(keys) >= _KEY_CACHE_MAX:
                keys.clear()
            keys[raw] = key
    now = job.now_ns
    verifier = RecordVerifier(
        trusted_keys={hashlib.sha256(raw).hexdigest(): key},
        limits=limits,
        now_ns=None if now is None else lambda: now,
    )
    try:
        return verifier.verify(Envelope.from_bytes(job.envelope, limits))
    except VerificationError:
        return None
    except Exception:  # a verifier bug: the ingest thread meets it inline, and says so
        log.exception("verifying ahead failed unexpectedly; the ingest thread verifies it")
        return None


def _worker_main(requests: Connection, results: Connection, limits: Limits) -> None:
    keys: dict[bytes, Ed25519PublicKey] = {}
    try:
        while True:
            jobs: list[VerifyJob] = requests.recv()
            out = []
            for job in jobs:
                record = verify_presented(job, limits, keys)
                out.append(None if record is None else to_wire(record))
            results.send(out)
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the collector closed the pipe, or died


def _widen(conn: Connection) -> None:
    # With a lower fs.pipe-max-size the default size works too, in more reads.
    with contextlib.suppress(OSError):
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


class _Worker(NamedTuple):
    process: BaseProcess
    requests: Connection  # our write end
    results: Connection  # our read end


class VerifyWorkers:
    """`count` worker processes. `verify` is called from one thread at a time."""

    def __init__(self, count: int, limits: Limits) -> None:
        if count < 1:
            raise ValueError("at least one verify worker")
        self._limits = limits
        self._ctx = mp.get_context("spawn")
        self._workers = [self._start(i) for i in range(count)]
        self.restarts = 0

    @property
    def count(self) -> int:
        return len(self._workers)

    def _start(self, index: int) -> _Worker:
        their_requests, our_requests = self._ctx.Pipe(duplex=False)
        our_results, their_results = self._ctx.Pipe(duplex=False)
        for conn in (our_requests, our_results):
            _widen(conn)
        process = self._ctx.Process(
            target=_worker_main,
            args=(their_requests, their_results, self._limits),
            name=f"flopwatch-verify-{index}",
            daemon=True,
        )
        process.start()
        # The worker holds the only other ends: our death is its EOF, and its death ours.
        their_requests.close()
        their_results.close()
        return _Worker(process, our_requests, our_results)

    def verify(
        self, items: Sequence[tuple[bytes, bytes | None]], now_ns: int | None
    ) -> list[VerifiedRecord | None]:
        """For each (envelope, presented key): the record verified against that key, or None
        where a worker did not verify it; in order. `now_ns` bounds interval ends as the
        ingestor's own check does (`None`: no clock check)."""
        jobs = [VerifyJob(data, presented, now_ns) for data, presented in items]
        if not jobs:
            return []
        n = len(self._workers)
        size = -(-len(jobs) // n)
        chunks = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        sent: list[bool] = []
        for worker, chunk in zip(self._workers, chunks, strict=False):
            sent.append(self._send(worker, chunk))
        out: list[VerifiedRecord | None] = []
        for i, (chunk, ok) in enumerate(zip(chunks, sent, strict=True)):
            wires = self._receive(i, len(chunk)) if ok else None
            if wires is None:
                self._restart(i)
                out += [None] * len(chunk)
                continue
            for job, wire in zip(chunk, wires, strict=True):
                out.append(None if wire is None else self._rebuild(job.envelope, wire))
        return out

    def _rebuild(self, data: bytes, wire: _Wire) -> VerifiedRecord | None:
        try:
            return from_wire(data, wire, self._limits)
        except (VerificationError, TypeError, ValueError):  # a worker out of step with us
            log.exception("a verify worker's answer does not fit its envelope; verifying inline")
            return None

    def _send(self, worker: _Worker, chunk: list[VerifyJob]) -> bool:
        try:
            worker.requests.send(chunk)
            return True
        except (OSError, ValueError):
            return False

    def _receive(self, i: int, expected: int) -> list[_Wire | None] | None:
        try:
            wires: list[_Wire | None] = self._workers[i].results.recv()
        except (EOFError, OSError):
            return None
        if len(wires) != expected:  # out of step with us: start it again
            return None
        return wires

    def _restart(self, i: int) -> None:
        old = self._workers[i]
        log.error(
            "verify worker %s (pid %s) is gone (exit code %s); starting another, and verifying "
            "its envelopes on the ingest thread",
            old.process.name,
            old.process.pid,
            old.process.exitcode,
        )
        old.requests.close()
        old.results.close()
        old.process.kill()
        old.process.join(timeout=5)
        self._workers[i] = self._start(i)
        self.restarts += 1

    def close(self) -> None:
        for worker in self._workers:
            worker.requests.close()  # EOF: the worker returns
            worker.results.close()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        self._workers = []
