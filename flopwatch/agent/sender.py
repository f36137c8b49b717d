"""Stream spooled envelopes to the collector and settle them as acknowledgements come back.

One bidirectional `Submit` stream at a time. Every pending envelope is sent in sequence order,
then new ones as the sampling thread appends them (`notify`). At most `window` envelopes are in
flight unacknowledged. Acks settle records in the spool: ACCEPTED and DUPLICATE as delivered,
REJECTED too (refused for good: resending cannot help) after an ERROR log; RETRY leaves the
record pending and it is sent again after a pause. When the stream or channel fails, or no ack
comes for `ack_timeout_s` while envelopes are in flight (a half-open connection after a network
partition looks like that), the sender backs off (exponential, jittered, capped), reconnects and
resends everything still pending; the collector ignores what it already holds.

A failure to connect that is the TLS handshake's (the collector refused our certificate, ours
refused its, one side speaks no TLS) is logged with what to check (`explain_connect_failure`):
gRPC itself only says "Socket closed".

The stream goes to the collector's IngestService. A collector older than that service answers
UNIMPLEMENTED (asked on each connection, before the stream opens); the sender then streams to
the deprecated `Collector` service instead, and logs that once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from flopwatch.agent.spool.store import Spool
from flopwatch.errors import ConfigError, SpoolError, TransportError
from flopwatch.keys import short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.v1 import collector_pb2, envelope_pb2

log = logging.getLogger(__name__)

ACK_WINDOW = 256  # envelopes in flight without an ack
ACK_TIMEOUT_S = 60.0  # no ack for this long while envelopes are in flight: the stream is dead
PUBLIC_KEY_METADATA = "flopwatch-public-key"  # hex raw Ed25519 key, for enrollment on first use
# A one-time enrollment token (`flopwatch nodes token`): the collector enrolls this key with it.
ENROLL_TOKEN_METADATA = "flopwatch-enroll-token"  # noqa: S105 (a metadata key name)
SUBMIT_METHOD = "/flopwatch.v1.IngestService/Submit"
# Collectors before IngestService (deprecated there, removed in the release after).
LEGACY_SUBMIT_METHOD = "/flopwatch.v1.Collector/Submit"
PROBE_TIMEOUT_S = 30.0  # for the empty stream that asks whether IngestService is there

SenderState = Literal["connecting", "backoff", "stopped"]
_SubmitCall = grpc.aio.StreamStreamCall[collector_pb2.SubmitRequest, collector_pb2.SubmitResponse]
_SETTLE = frozenset({collector_pb2.ACK_STATUS_ACCEPTED, collector_pb2.ACK_STATUS_DUPLICATE})


@dataclass
class SenderStats:
    sent: int = 0  # envelopes written to a stream, resends included
    acked: int = 0  # ACCEPTED or DUPLICATE
    rejected: int = 0
    retried: int = 0  # RETRY answers
    reconnects: int = 0
    last_success_unix: float | None = None  # when an ack last settled records


class _Session:
    """What one stream has in flight."""

    def __init__(self, backoff_s: float) -> None:
        self.in_flight: set[int] = set()
        self.high = 0  # highest sequence sent on this stream
        self.retry: set[int] = set()  # answered RETRY, to be sent again at `retry_due`
        self.retry_due = 0.0
        self.retry_delay = backoff_s
        self.settled = 0
        self.heard = 0.0  # loop time of the last response, or of the first send after a lull


class Sender:
    """Delivers the spool's envelopes to one collector; `run` until cancelled."""

    def __init__(
        self,
        target: str,
        spool: Spool,
        *,
        public_key_raw: bytes,
        insecure: bool = False,
        channel_credentials: grpc.ChannelCredentials | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        window: int = ACK_WINDOW,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        rng: random.Random | None = None,
        on_state: Callable[[SenderState], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        enroll_token: str | None = None,
    ) -> None:
        if not insecure and channel_credentials is None:
            raise ConfigError("a secure channel needs credentials (or insecure=True)")
        if window < 1 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ConfigError("sender window and backoff must be positive, initial <= max")
        self._target = target
        self._spool = spool
        self._key_id = hashlib.sha256(public_key_raw).hexdigest()
        self._metadata: tuple[tuple[str, str], ...] = ((PUBLIC_KEY_METADATA, public_key_raw.hex()),)
        if enroll_token:
            self._metadata += ((ENROLL_TOKEN_METADATA, enroll_token),)
        self._insecure = insecure
        self._credentials = channel_credentials
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._window = window
        self._ack_timeout = ack_timeout_s
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)
        self._on_state = on_state
        self._limits = limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # something to send, or room in the window
        self._progress = asyncio.Event()  # records were settled
        self._told_legacy = False  # the fallback to LEGACY_SUBMIT_METHOD was logged
        self.stats = SenderStats()

    def notify(self) -> None:
        """Say new envelopes are in the spool. Safe to call from any thread."""
        loop = self._loop
        if loop is None:
            return  # not running yet: `run` starts by reading everything pending
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to wake
            loop.call_soon_threadsafe(self._wake.set)

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending in the spool; False if `timeout` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._progress.clear()
            if self._spool.depth() == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled. Raises SpoolError if the spool fails."""
        self._loop = asyncio.get_running_loop()
        delay = self._backoff[0]
        try:
            while True:
                self._state("connecting")
                session = _Session(self._backoff[0])
                try:
                    await self._stream(session)
                    log.warning("collector %s closed the stream", self._target)
                except grpc.aio.AioRpcError as e:
                    log.warning(
                        "stream to collector %s failed: %s: %s%s",
                        self._target,
                        e.code().name,
                        e.details(),
                        explain_connect_failure(e.code(), e.details() or "", self._insecure),
                    )
                except TransportError as e:
                    log.warning("stream to collector %s given up: %s", self._target, e)
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a cancel that gRPC turned into
                    raise asyncio.CancelledError  # an error above: still a cancel
                if session.settled:
                    delay = self._backoff[0]
                self._state("backoff")
                self.stats.reconnects += 1
                await asyncio.sleep(self._jitter(delay))
                delay = min(delay * 2, self._backoff[1])
        finally:
            self._state("stopped")

    def _state(self, state: SenderState) -> None:
        if self._on_state is not None:
            self._on_state(state)

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + 0.5 * self._rng.random())

    def _channel(self) -> grpc.aio.Channel:
        size = self._limits.max_grpc_message_bytes
        options = [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
        ]
        if self._insecure:
            return grpc.aio.insecure_channel(self._target, options=options)
        assert self._credentials is not None  # checked in __init__
        return grpc.aio.secure_channel(self._target, self._credentials, options=options)

    async def _stream(self, session: _Session) -> None:
        """One stream, to IngestService or, on an older collector, the deprecated Collector."""
        async with self._channel() as channel:
            legacy = await self._lacks_ingest_service(channel)
            await self._submit(channel, LEGACY_SUBMIT_METHOD if legacy else SUBMIT_METHOD, session)

    async def _lacks_ingest_service(self, channel: grpc.aio.Channel) -> bool:
        """Whether the collector answers IngestService UNIMPLEMENTED (an older release).

        Asked with an empty Submit stream (no record, no key), which a collector that has the
        service ends at once, OK: a write to a method the server lacks can fail as INTERNAL
        instead of UNIMPLEMENTED (grpc/grpc#36066), so the question is asked before any write.
        Any other answer (the collector is down, say) is for the real stream to report."""
        call: _SubmitCall = _submit_rpc(channel, SUBMIT_METHOD)(iter(()), timeout=PROBE_TIMEOUT_S)
        if await call.code() != grpc.StatusCode.UNIMPLEMENTED:
            return False
        if not self._told_legacy:
            self._told_legacy = True
            log.warning(
                "collector %s has no IngestService (an older release): sending to the "
                "deprecated %s instead; upgrade the collector",
                self._target,
                LEGACY_SUBMIT_METHOD,
            )
        return True

    async def _submit(self, channel: grpc.aio.Channel, method: str, session: _Session) -> None:
        """Send what is pending and new, settle acks; returns when the stream closes."""
        call: _SubmitCall = _submit_rpc(channel, method)(None, metadata=self._metadata)
        reader = asyncio.create_task(self._read_acks(call, session))
        try:
            await self._write(call, session, reader)
            # Not `await reader`: cancelling us would cancel it, and gRPC turns that into
            # an AioRpcError(CANCELLED), so our own cancellation would be lost.
            await asyncio.wait([reader])
            reader.result()  # raises the stream's error, if it ended with one
        finally:
            call.cancel()
            reader.cancel()
            await asyncio.wait([reader])
            if not reader.cancelled():
                reader.exception()  # retrieved; already raised above or superseded

    async def _write(self, call: _SubmitCall, s: _Session, reader: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while not reader.done():
            self._wake.clear()  # before looking, so a notify while we look is not lost
            batch = await self._next_batch(s, loop.time())
            for seq, data in batch:
                if not s.in_flight:
                    s.heard = loop.time()  # the ack clock starts with the first in flight
                s.in_flight.add(seq)  # before the write: its ack may come back at once
                request = collector_pb2.SubmitRequest(envelope=_envelope(seq, data))
                try:
                    await asyncio.wait_for(call.write(request), self._ack_timeout)
                except asyncio.InvalidStateError:
                    return  # the call has ended; the reader raises its status
                except TimeoutError as e:  # flow control held the write: nobody reads
                    raise TransportError(f"a write stalled for {self._ack_timeout:.0f}s") from e
                self.stats.sent += 1
            if batch:
                continue
            timeout = self._wait_s(s, loop.time())
            waiter = asyncio.create_task(self._wake.wait())
            await asyncio.wait(
                {waiter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()

    def _wait_s(self, s: _Session, now: float) -> float | None:
        """How long the writer may wait for a wake-up: until a retry is due or acks are late."""
        deadlines = [s.retry_due] if s.retry else []
        if s.in_flight:
            if now - s.heard > self._ack_timeout:
                raise TransportError(
                    f"no ack for {self._ack_timeout:.0f}s with {len(s.in_flight)} in flight"
                )
            deadlines.append(s.heard + self._ack_timeout)
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def _next_batch(self, s: _Session, now: float) -> list[tuple[int, bytes]]:
        room = self._window - len(s.in_flight)
        out: list[tuple[int, bytes]] = []
        if room > 0 and s.retry and now >= s.retry_due:
            for seq in sorted(s.retry)[:room]:
                s.retry.discard(seq)
                data = await asyncio.to_thread(self._spool.get, seq)
                if data is not None:  # else settled meanwhile
                    out.append((seq, data))
            room -= len(out)
        if room > 0:
            new = await asyncio.to_thread(self._spool.pending, room, s.high)
            if new:
                s.high = new[-1][0]
            out += new
        return out

    async def _read_acks(self, call: _SubmitCall, s: _Session) -> None:
        async for response in call:
            s.heard = asyncio.get_running_loop().time()
            settle: list[int] = []
            retried: list[int] = []
            for ack in response.acks:
                seq = ack.sequence
                if (ack.key_id and ack.key_id != self._key_id) or seq not in s.in_flight:
                    log.warning(
                        "ignoring an ack for %s #%d not in flight", short_key_id(ack.key_id), seq
                    )
                    continue
                s.in_flight.discard(seq)
                if ack.status in _SETTLE:
                    self.stats.acked += 1
                    settle.append(seq)
                elif ack.status == collector_pb2.ACK_STATUS_REJECTED:
                    log.error("collector rejected #%d: %s: %s", seq, ack.reason, ack.detail)
                    self.stats.rejected += 1
                    settle.append(seq)
                else:  # RETRY, or a status this agent does not know: send it again later
                    self._retry_later(s, seq)
                    retried.append(seq)
                    why = f"{ack.reason or 'unknown status'}: {ack.detail}".rstrip(": ")
            if retried:  # one line per answer, not per record: a pending key retries a window
                log.info(
                    "collector asked to retry %d record(s) (#%d..#%d) later: %s",
                    len(retried),
                    min(retried),
                    max(retried),
                    why,
                )
            if settle:
                await asyncio.to_thread(self._spool.ack_many, settle)
                s.settled += len(settle)
                s.retry_delay = self._backoff[0]
                self.stats.last_success_unix = time.time()
                self._progress.set()
            self._wake.set()  # room in the window, or a retry to schedule

    def _retry_later(self, s: _Session, seq: int) -> None:
        self.stats.retried += 1
        if not s.retry:
            s.retry_due = asyncio.get_running_loop().time() + self._jitter(s.retry_delay)
            s.retry_delay = min(s.retry_delay * 2, self._backoff[1])
        s.retry.add(seq)


def explain_connect_failure(code: grpc.StatusCode, details: str, insecure: bool) -> str:
    """What to check when a connection failed in its TLS handshake ("" when it did not look
    like that). gRPC tells the client no more than "Socket closed" when the collector refuses
    its certificate, so that case is named as the likely one, not a certainty."""
    if code != grpc.StatusCode.UNAVAILABLE or "failed to connect" not in details:
        return ""
    lowered = details.lower()
    if "wrong_version_number" in lowered:
        return (
            " -- the collector does not speak TLS on this port (started with --insecure?), "
            "or the agent was started without --insecure against a plaintext collector"
        )
    if "handshake failed" in lowered and not insecure:
        return (
            " -- we refused the collector's certificate: it must be issued by the CA in this "
            "agent's --tls-ca, be in date, and name the host or address in --collector"
        )
    if "socket closed" in lowered or "connection reset" in lowered:
        if insecure:
            return " -- the collector closed the connection: does it expect TLS (no --insecure)?"
        return (
            " -- the collector closed the connection in the TLS handshake: most likely it "
            "refused our client certificate (--tls-cert and --tls-key must be issued by the CA "
            "the collector's --tls-ca names, and be in date); or it is at its connection cap"
        )
    return ""


def read_enroll_token(path: Path | None) -> str | None:
    """The enrollment token in `path` (None: no file); refuses a file group or others can read."""
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        token = read_limited(path, MAX_SMALL_FILE_BYTES, "enrollment token").decode("ascii")
        token = token.strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read enrollment token {path}: {e}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"enrollment token {path} has mode {stat.S_IMODE(mode):04o}; "
            "it must be readable by its owner only (chmod 600)"
        )
    if not token:
        raise ConfigError(f"enrollment token file {path} is empty")
    return token


def _submit_rpc(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.StreamStreamMultiCallable[collector_pb2.SubmitRequest, collector_pb2.SubmitResponse]:
    return channel.stream_stream(
        method,
        request_serializer=collector_pb2.SubmitRequest.SerializeToString,
        response_deserializer=collector_pb2.SubmitResponse.FromString,
    )


def _envelope(seq: int, data: bytes) -> envelope_pb2.Envelope:
    try:
        return envelope_pb2.Envelope.FromString(data)
    except DecodeError as e:  # the spool's CRC makes this a bug or bad memory, not bad disk
        raise SpoolError(f"spooled record {seq} is not an envelope: {e}") from e
