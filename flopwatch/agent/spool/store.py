"""Durable spool of signed envelopes: a record is on disk before anything sends it.

The directory holds append-only segments of CRC-framed records and an ack state file (format:
flopwatch/agent/spool/format.py). `append` writes a frame and fsyncs it, and the directory when it
creates a segment, before it returns. A sequence is *settled* once the collector acknowledged it or
the spool dropped it; the oldest segments are deleted once all their records are settled, except the
newest segment. The ack state is replaced atomically (tmp, fsync, rename, fsync dir).

Overflow: an append that would take the spool past `max_bytes` first drops the oldest segment,
delivered or not, and returns the undelivered ranges. The caller reports them in the *next*
record it appends; until that append they are kept in the ack state, and a crash in between
reports them again on open. Until the collector acknowledges that reporting record, the ack
state remembers what it reports: if the record is dropped or cut too, its losses are returned
again, so no loss goes unreported however often the spool overflows.

Full disk (ENOSPC, EDQUOT): a record that cannot be written is lost, not the agent. `append`
returns it as a loss (with what it was to report), consecutive ones merged into one range. An
ack state that cannot be saved stays in memory; settled segments are then deleted first, to
make room, and the state saved after.

Recovery on open:
 1. Segments are scanned in order. The first bad frame (short, CRC mismatch, sequence not
    rising) ends a segment's valid data; the segment is truncated there.
 2. Records past the cut may have been sent before the crash. The loss runs from the record
    after the last valid one to the highest sequence that may exist: the next segment's first
    sequence - 1, else the highest of the ack state and of frames past the cut that still
    check out. A cut always counts as at least one lost record.
 3. Lost ranges are written to the ack state as settled, so a later open reports them again
    (the ack state's highest sequence stays above the chain head) instead of forgetting them.
 4. The chain head is the last valid record (its DSSE digest and signing key); if no segment
    holds a record, the ack state's `base`, the last record of the newest deleted segment.

A spool holds the chain of one node key. The agent opens it through `open_key_spool`
(flopwatch/agent/spool/rekey.py), which sets aside a spool another key wrote.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flopwatch.agent.spool.format import (
    HEADER,
    SEGMENT_RE,
    SEQ,
    STATE_FILE,
    AckState,
    ChainRef,
    Runs,
    SpoolLoss,
    add_unstored,
    encode_frame,
    salvage,
    scan,
    segment_name,
)
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, SpoolError, VerificationError
from flopwatch.limits import DEFAULT_LIMITS

__all__ = ["STATE_FILE", "ChainRef", "RecoveryReport", "Spool", "SpoolLoss"]

log = logging.getLogger(__name__)

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

# Maps an envelope to the [start, end) unix-ns time range it covers, or None if unknown.
SpanOf = Callable[[bytes], "tuple[int, int] | None"]


@dataclass(frozen=True)
class RecoveryReport:
    """What `Spool` found on open: the chain head and the losses to report in a gap."""

    head: ChainRef | None
    losses: tuple[SpoolLoss, ...] = ()
    truncated_bytes: int = 0

    @property
    def corrupt(self) -> bool:
        return self.truncated_bytes > 0 or any(x.reason == "corrupt" for x in self.losses)

    @property
    def tail_loss(self) -> SpoolLoss | None:
        """The loss above the chain head: its sequences may be held by the collector."""
        top = self.head.sequence if self.head else 0
        return next((x for x in self.losses if x.last > top), None)


@dataclass
class _Segment:
    first: int
    path: Path
    fd: int
    size: int = 0
    last: int = 0  # sequence of the last record
    last_at: tuple[int, int] = (0, 0)  # (offset, end) of the last frame
    unsettled: int = 0


class Spool:
    """Append-only, crash-safe, size-bounded store of envelopes awaiting acknowledgement.

    Thread-safe: the sampling thread appends while the sender reads and acknowledges.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        span_of: SpanOf | None = None,
    ) -> None:
        if segment_bytes <= 0 or max_bytes < 2 * segment_bytes:
            raise ConfigError("spool max bytes must be at least twice the segment size")
        self._dir = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._span_of = span_of
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # by first sequence, ascending
        self._index: dict[int, tuple[_Segment, int, int]] = {}  # unsettled: seq -> frame
        self._state = AckState()
        self._last = 0
        self._unsaved = False  # the disk was full when the ack state was last saved
        try:
            self.recovery = self._open()
        except OSError as e:
            self.close()
            raise SpoolError(f"cannot open spool {directory}: {e}") from e

    def append(self, sequence: int, envelope: bytes) -> list[SpoolLoss]:
        """Store one envelope durably. Returns the undelivered records dropped to make room
        (on a full disk: this one and what it was to report), which the caller must report in
        the next record it appends."""
        with self._lock:
            if sequence <= self._last:
                raise SpoolError(f"sequence {sequence} is not above the last one ({self._last})")
            if len(envelope) > DEFAULT_LIMITS.max_envelope_bytes:
                raise SpoolError(f"envelope of {len(envelope)} bytes is over the limit")
            frame = encode_frame(sequence, envelope)
            reported = self._state.unreported  # this record reports them (caller's contract)
            cur = next(reversed(self._segments.values()), None)
            if cur is not None and cur.size + len(frame) > self._segment_bytes:
                cur = None  # roll over to a new segment
            try:
                losses = self._make_room(len(frame), keep=cur)
                if cur is None:
                    cur = self._create(sequence)
                self._write(cur, frame)
            except OSError as e:
                if e.errno not in _DISK_FULL:
                    raise SpoolError(f"cannot write to spool {self._dir}: {e}") from e
                return self._not_stored(sequence, envelope, e)
            offset = cur.size
            cur.size += len(frame)
            cur.last, cur.last_at = sequence, (offset, cur.size)
            cur.unsettled += 1
            self._index[sequence] = (cur, offset, cur.size)
            self._last = sequence
            if reported:
                self._state.reporting[sequence] = reported
            if reported or losses:
                self._state.unreported = losses
                self._save_state()
            return losses

    def ack(self, sequence: int) -> None:
        """Mark one record delivered (see `ack_many`)."""
        self.ack_many([sequence])

    def ack_many(self, sequences: Iterable[int]) -> None:
        """Mark records delivered, persist that, and delete the oldest settled segments."""
        with self._lock:
            for seq in sequences:
                self._state.settled.add(seq, seq)
                self._state.reporting.pop(seq, None)
                entry = self._index.pop(seq, None)
                if entry is not None:
                    entry[0].unsettled -= 1
            try:
                self._collect()
            except OSError as e:
                raise SpoolError(f"cannot update spool {self._dir}: {e}") from e

    def pending(self, limit: int | None = None, after: int = 0) -> list[tuple[int, bytes]]:
        """Unsettled (sequence, envelope) above `after`, ascending, at most `limit` of them."""
        with self._lock:
            out: list[tuple[int, bytes]] = []
            for seq, entry in self._index.items():
                if limit is not None and len(out) >= limit:
                    break
                if seq > after:
                    out.append((seq, self._read(*entry)))
            return out

    def get(self, sequence: int) -> bytes | None:
        """The envelope of an unsettled record, or None once it is settled or gone."""
        with self._lock:
            entry = self._index.get(sequence)
            return None if entry is None else self._read(*entry)

    def depth(self) -> int:
        """Number of records not yet settled."""
        with self._lock:
            return len(self._index)

    def close(self) -> None:
        with self._lock:
            for seg in self._segments.values():
                os.close(seg.fd)
            self._segments.clear()
            self._index.clear()

    # -- internals, called with the lock held --------------------------------------------------

    def _read(self, seg: _Segment, offset: int, end: int) -> bytes:
        at = offset + HEADER.size + SEQ.size
        try:
            return os.pread(seg.fd, end - at, at)
        except OSError as e:
            raise SpoolError(f"cannot read spool segment {seg.path}: {e}") from e

    def _not_stored(self, sequence: int, envelope: bytes, err: OSError) -> list[SpoolLoss]:
        """A full disk refused the record: it is lost. Return it after what it was to report."""
        if not any(x.last == sequence - 1 for x in self._state.unreported):
            log.warning("disk full (%s): record %d not stored, nor those after it", err, sequence)
        self._last = sequence
        span = self._span_of(envelope) if self._span_of else None
        self._state.unreported = add_unstored(self._state.unreported, sequence, span)
        self._save_state()
        return list(self._state.unreported)

    def _write(self, seg: _Segment, frame: bytes) -> None:
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(seg.fd, view) :]
            os.fsync(seg.fd)
        except OSError:
            with contextlib.suppress(OSError):  # keep the segment a sequence of whole frames
                os.ftruncate(seg.fd, seg.size)
            raise

    def _ref(self, seg: _Segment) -> ChainRef:
        data = self._read(seg, *seg.last_at)
        try:
            envelope = Envelope.from_bytes(data)
        except VerificationError as e:
            raise SpoolError(f"record {seg.last} in {seg.path} is not an envelope: {e}") from e
        span = self._span_of(data) if self._span_of else None
        key_id = envelope.signatures[0][0] if envelope.signatures else None
        return ChainRef(seg.last, envelope.digest, span[1] if span else None, key_id)

    def _create(self, first: int) -> _Segment:
        path = self._dir / segment_name(first)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._fsync_dir()
        seg = _Segment(first=first, path=path, fd=fd)
        self._segments[first] = seg
        return seg

    def _make_room(self, need: int, keep: _Segment | None) -> list[SpoolLoss]:
        losses: list[SpoolLoss] = []
        while sum(s.size for s in self._segments.values()) + need > self._max_bytes:
            oldest = next((s for s in self._segments.values() if s is not keep), None)
            if oldest is None:
                break
            losses += self._drop(oldest)
        return losses

    def _drop(self, seg: _Segment) -> list[SpoolLoss]:
        """Delete the oldest segment although some of its records are undelivered. Returns
        what its undelivered records reported, then the new loss."""
        lost = {s: e for s, e in self._index.items() if e[0] is seg}
        again = [x for s in lost for x in self._state.reporting.pop(s, [])]
        spans = {s: self._span_of(self._read(*e)) for s, e in lost.items()} if self._span_of else {}
        losses = []
        for first, last in Runs((s, s) for s in lost).runs():
            known = [sp for s, sp in spans.items() if sp is not None and first <= s <= last]
            detail = f"spool over {self._max_bytes} bytes; dropped undelivered records"
            start = min(sp[0] for sp in known) if known else None
            end = max(sp[1] for sp in known) if known else None
            losses.append(SpoolLoss(first, last, "overflow", start, end, detail))
            log.warning("spool full: dropped undelivered records %d..%d", first, last)
        for s in lost:
            del self._index[s]
        seg.unsettled = 0
        self._state.settled.add(seg.first, seg.last)
        self._state.unreported = [*self._state.unreported, *again, *losses]  # saved just below
        self._collect(force=seg)
        return [*again, *losses]

    def _collect(self, force: _Segment | None = None) -> None:
        """Persist the ack state, then delete the settled oldest segments (never the newest)
        and `force`, the oldest segment, which overflow drops. On a full disk, delete first
        and persist after, into the room made.

        Only a prefix is deleted, so the segments left hold consecutive sequence ranges and
        everything below the oldest of them is settled.
        """
        segs = list(self._segments.values())
        doomed: list[_Segment] = []
        for seg in segs:
            if seg is not force and (seg.unsettled or seg is segs[-1]):
                break
            doomed.append(seg)
        base = self._state.base
        if doomed and (base is None or doomed[-1].last > base.sequence):
            self._state.base = self._ref(doomed[-1])
        if len(doomed) < len(segs) and segs[len(doomed)].first > 1:
            self._state.settled.add(1, segs[len(doomed)].first - 1)
        saved = self._save_state()
        for seg in doomed:
            os.close(seg.fd)
            seg.path.unlink()
            del self._segments[seg.first]
        if doomed:
            self._fsync_dir()
            if not saved:
                self._save_state()

    def _save_state(self) -> bool:
        """Replace the ack state atomically. False on a full disk: it stays in memory and the
        next save writes it. SpoolError on any other failure."""
        tmp = self._dir / (STATE_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, self._state.to_bytes())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._dir / STATE_FILE)
        except OSError as e:
            if e.errno not in _DISK_FULL:
                raise SpoolError(f"cannot save spool state in {self._dir}: {e}") from e
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._unsaved:
                log.warning("spool ack state not saved (%s); kept in memory until there is room", e)
            self._unsaved = True
            return False
        self._fsync_dir()
        if self._unsaved:
            log.info("spool ack state saved again")
        self._unsaved = False
        return True

    def _load_state(self) -> None:
        (self._dir / (STATE_FILE + ".tmp")).unlink(missing_ok=True)  # an unfinished write
        path = self._dir / STATE_FILE
        if not path.exists():
            return
        try:
            self._state = AckState.from_bytes(path.read_bytes())
        except (ValueError, KeyError, TypeError) as e:
            # Replaced atomically, so this is damage from outside; resending is safe.
            log.warning(
                "spool ack state %s is unreadable (%s); all records count as unsent", path, e
            )
            self._state = AckState()

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open(self) -> RecoveryReport:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._load_state()
        paths = sorted(p for p in self._dir.iterdir() if SEGMENT_RE.fullmatch(p.name))
        firsts = [int(p.name[4:-4]) for p in paths]
        head, losses, cut = self._state.base, list(self._state.unreported), 0
        acked = Runs(self._state.settled.runs())  # before lost records are marked settled
        for i, path in enumerate(paths):
            next_first = firsts[i + 1] if i + 1 < len(paths) else None
            head, loss, n = self._recover_segment(path, firsts[i], head, next_first)
            cut += n
            losses += [loss] if loss else []
        for seq in [s for s in self._state.reporting if s not in self._index]:
            again = self._state.reporting.pop(seq)
            if seq not in acked:  # the reporting record was cut before delivery: report again
                self._state.unreported = [*self._state.unreported, *again]
                losses += again
        top, high = (head.sequence if head else 0), self._state.settled.max()
        if high > top and not any(x.last >= high for x in losses):
            # No bad frame, yet the collector acknowledged records the spool no longer holds.
            end_ns = head.end_ns if head else None
            losses.append(SpoolLoss(top + 1, high, "corrupt", end_ns, None, "records missing"))
        self._last = max(top, high)
        self._collect()
        for loss in losses:
            log.error("spool lost records %d..%d: %s", loss.first, loss.last, loss.detail)
        return RecoveryReport(head=head, losses=tuple(losses), truncated_bytes=cut)

    def _recover_segment(
        self, path: Path, first: int, head: ChainRef | None, next_first: int | None
    ) -> tuple[ChainRef | None, SpoolLoss | None, int]:
        """Index one segment's valid frames, cut it at the first bad one, name what is lost."""
        buf = path.read_bytes()
        frames, bad = scan(buf, after=head.sequence if head else 0)
        seg = _Segment(first=first, path=path, fd=os.open(path, os.O_RDWR | os.O_APPEND))
        self._segments[first] = seg
        for f in frames:
            if f.sequence not in self._state.settled:
                self._index[f.sequence] = (seg, f.offset, f.end)
                seg.unsettled += 1
        if frames:
            seg.size, seg.last = frames[-1].end, frames[-1].sequence
            seg.last_at = (frames[-1].offset, frames[-1].end)
            head = self._ref(seg)
        if bad is not None:
            os.ftruncate(seg.fd, bad)
            os.fsync(seg.fd)
            log.warning("spool segment %s: bad frame at byte %d of %d, cut", path, bad, len(buf))
        if not frames:  # nothing valid in it: a crash right after it was created, or damage
            os.close(seg.fd)
            path.unlink()
            del self._segments[first]
            self._fsync_dir()
        if bad is None:
            return head, None, 0
        after = head.sequence if head else 0
        if next_first is not None:
            last = next_first - 1
        else:  # the newest segment: what may have been sent is bounded by what still exists
            last = max(after + 1, salvage(buf, bad, after), self._state.settled.max())
        if last <= after:
            return head, None, len(buf) - bad
        self._state.settled.add(after + 1, last)
        detail = f"unreadable frame at byte {bad} of {path.name}"
        loss = SpoolLoss(after + 1, last, "corrupt", head.end_ns if head else None, None, detail)
        return head, loss, len(buf) - bad

    # Last in the class body: inside it, the name `bytes` means this method from here on.
    def bytes(self) -> int:
        """Bytes the segments take on disk."""
        with self._lock:
            return sum(s.size for s in self._segments.values())
