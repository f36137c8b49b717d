"""The spool's on-disk format: segment frames and the ack state file. Pure, no I/O.

A segment `seg-<first sequence, 20 digits>.log` is a run of frames:

    [u32 length][u32 crc32(body)][body]    body = [u64 sequence][envelope bytes]

all little-endian. `acks.state` is JSON: the settled sequences as runs, the chain `base` (the
last record of the newest deleted segment), the overflow losses no record has reported yet, and
those a record reports that the collector has not acknowledged yet.
"""

from __future__ import annotations

import bisect
import json
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from flopwatch.limits import DEFAULT_LIMITS

STATE_FILE = "acks.state"
SEGMENT_RE = re.compile(r"seg-[0-9]{20}\.log")
HEADER = struct.Struct("<II")  # body length, crc32 of body
SEQ = struct.Struct("<Q")
_MAX_BODY = SEQ.size + DEFAULT_LIMITS.max_envelope_bytes
# Frames found past a cut count only if their sequence lies this close above the cut.
_SALVAGE_SPAN = 1 << 24


def segment_name(first: int) -> str:
    return f"seg-{first:020d}.log"


@dataclass(frozen=True)
class ChainRef:
    """A record the chain continues from: its sequence, DSSE digest, end time if known, and
    the id of the key that signed it (None in ack states written before it was kept)."""

    sequence: int
    digest: bytes
    end_ns: int | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class SpoolLoss:
    """Sequences [first, last] the spool dropped ("overflow") or found unreadable ("corrupt")."""

    first: int
    last: int
    reason: str
    start_ns: int | None = None  # time range of the lost records where known
    end_ns: int | None = None
    detail: str = ""


DISK_FULL_DETAIL = "disk full: record not stored"


def add_unstored(
    unreported: list[SpoolLoss], sequence: int, span: tuple[int, int] | None
) -> list[SpoolLoss]:
    """`unreported` plus record `sequence`, which a full disk refused (reason "overflow":
    lost for want of room); merged into the last loss when that is the record before it."""
    start, end = span if span else (None, None)
    prev = unreported[-1] if unreported else None
    if prev is not None and prev.detail == DISK_FULL_DETAIL and prev.last == sequence - 1:
        merged = SpoolLoss(prev.first, sequence, prev.reason, prev.start_ns, end, prev.detail)
        return [*unreported[:-1], merged]
    return [*unreported, SpoolLoss(sequence, sequence, "overflow", start, end, DISK_FULL_DETAIL)]


@dataclass(frozen=True)
class Frame:
    sequence: int
    offset: int  # where the frame starts in its segment
    end: int  # where the next one starts

    @property
    def envelope_at(self) -> int:
        return self.offset + HEADER.size + SEQ.size


def encode_frame(sequence: int, envelope: bytes) -> bytes:
    body = SEQ.pack(sequence) + envelope
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def frame_at(buf: bytes, off: int) -> Frame | None:
    """The frame at `off` if it is whole and its CRC matches."""
    if off + HEADER.size > len(buf):
        return None
    length, crc = HEADER.unpack_from(buf, off)
    end = off + HEADER.size + length
    if not SEQ.size <= length <= _MAX_BODY or end > len(buf):
        return None
    if zlib.crc32(memoryview(buf)[off + HEADER.size : end]) != crc:
        return None
    return Frame(SEQ.unpack_from(buf, off + HEADER.size)[0], off, end)


def scan(buf: bytes, after: int) -> tuple[list[Frame], int | None]:
    """Valid frames from the start of a segment (sequences rising above `after`), and the
    offset of the first bad frame, None if there is none."""
    frames: list[Frame] = []
    off = 0
    while off < len(buf):
        f = frame_at(buf, off)
        if f is None or f.sequence <= (frames[-1].sequence if frames else after):
            return frames, off
        frames.append(f)
        off = f.end
    return frames, None


def salvage(buf: bytes, bad: int, after: int) -> int:
    """Highest sequence of the frames past a bad one that still check out (0 if none)."""
    best, off = 0, bad + 1
    while off + HEADER.size <= len(buf):
        f = frame_at(buf, off)
        if f is not None and after < f.sequence < after + _SALVAGE_SPAN:
            best, off = max(best, f.sequence), f.end
        else:
            off += 1
    return best


class Runs:
    """A set of sequences kept as sorted, disjoint, non-adjacent runs [first, last]."""

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for a, b in runs:
            self.add(a, b)

    def add(self, first: int, last: int) -> None:
        i = bisect.bisect_left(self._ends, first - 1)  # first run that touches or follows
        j = bisect.bisect_right(self._starts, last + 1)  # runs from i to j merge with it
        if i < j:
            first, last = min(first, self._starts[i]), max(last, self._ends[j - 1])
        self._starts[i:j], self._ends[i:j] = [first], [last]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and self._ends[i] >= seq

    def max(self) -> int:
        return self._ends[-1] if self._ends else 0

    def runs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))


@dataclass
class AckState:
    settled: Runs = field(default_factory=Runs)
    base: ChainRef | None = None
    unreported: list[SpoolLoss] = field(default_factory=list)
    # Losses a stored record reports, by its sequence, until the collector has it: if that
    # record is lost too, they must be reported again.
    reporting: dict[int, list[SpoolLoss]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        base = None if self.base is None else asdict(self.base) | {"digest": self.base.digest.hex()}
        state = {
            "version": 1,
            "settled": self.settled.runs(),
            "base": base,
            "unreported": [asdict(x) for x in self.unreported],
            "reporting": [[s, [asdict(x) for x in xs]] for s, xs in self.reporting.items()],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> AckState:
        """Parse; raises ValueError, KeyError or TypeError on anything malformed."""
        state = json.loads(data)
        b = state["base"]
        return cls(
            settled=Runs((int(x), int(y)) for x, y in state["settled"]),
            base=None
            if b is None
            else ChainRef(b["sequence"], bytes.fromhex(b["digest"]), b["end_ns"], b.get("key_id")),
            unreported=[SpoolLoss(**x) for x in state.get("unreported", [])],
            reporting={
                int(s): [SpoolLoss(**x) for x in xs] for s, xs in state.get("reporting", [])
            },
        )
