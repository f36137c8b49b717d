"""The evidence the fault tests compare, read as signed envelopes on both sides.

Each side is verified with the agents' own public keys, so no comparison trusts either side's
bookkeeping:
- `spooled_records`: the records an agent's spool still holds. The fault tests give agents
  segments larger than a whole run and the spool never deletes its newest segment, so after a
  run that is every record the agent stored (less what a fault destroyed on purpose).
- `held_records`: every envelope the collector accepted, read from its database (read-only).
Gaps are the signed ones inside those records: a second nobody measured must be named by one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.agent.spool.format import scan
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.verify import RecordVerifier
from flopwatch.verify.record import VerifiedRecord

Span = tuple[int, int]


def node_keys(state_dirs: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """The agents' public keys by key id, from their state directories."""
    keys = [SigningKey.load(d / "node.key") for d in state_dirs]
    return {k.key_id: k.public_key for k in keys}


def spooled_records(spool_dir: Path, keys: dict[str, Ed25519PublicKey]) -> list[VerifiedRecord]:
    verifier = RecordVerifier(trusted_keys=keys)
    out = []
    for path in sorted(spool_dir.glob("seg-*.log")):
        buf = path.read_bytes()
        frames, _ = scan(buf, after=0)
        out += [verifier.verify(Envelope.from_bytes(buf[f.envelope_at : f.end])) for f in frames]
    return out


def held_records(db: Path, keys: dict[str, Ed25519PublicKey]) -> list[VerifiedRecord]:
    verifier = RecordVerifier(trusted_keys=keys)
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT envelope FROM records ORDER BY key_id, sequence").fetchall()
    return [verifier.verify(Envelope.from_bytes(bytes(row[0]))) for row in rows]


def holes(spans: Sequence[Span]) -> list[Span]:
    """Parts of [min start, max end) that no span covers."""
    out: list[Span] = []
    ordered = sorted(spans)
    reached = ordered[0][1] if ordered else 0
    for start, end in ordered[1:]:
        if start > reached:
            out.append((reached, start))
        reached = max(reached, end)
    return out


def unaccounted(records: Iterable[VerifiedRecord]) -> dict[str, list[Span]]:
    """Per GPU: time between its first and last reading that no interval measured and no signed
    gap names. Empty lists everywhere means every unmeasured second is a signed gap."""
    spans: dict[str, list[Span]] = {}
    for r in records:
        for uuid, start, end in r.gpu_intervals:
            spans.setdefault(uuid, []).append((start, end))
        for g in r.gaps:
            spans.setdefault(g.gpu_uuid, []).append((g.start_ns, g.end_ns))
    return {uuid: holes(s) for uuid, s in sorted(spans.items())}


def gap_spans(records: Iterable[VerifiedRecord], reason: str) -> dict[str, list[Span]]:
    """Per GPU: the time ranges of the signed gaps with `reason` (e.g. "spool_overflow")."""
    out: dict[str, list[Span]] = {}
    for r in records:
        for g in r.gaps:
            if g.reason == reason:
                out.setdefault(g.gpu_uuid, []).append((g.start_ns, g.end_ns))
    return {uuid: sorted(s) for uuid, s in sorted(out.items())}


def measured_spans(records: Iterable[VerifiedRecord]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for r in records:
        for uuid, start, end in r.gpu_intervals:
            out.setdefault(uuid, []).append((start, end))
    return {uuid: sorted(s) for uuid, s in sorted(out.items())}


def missing_sequences(records: Iterable[VerifiedRecord]) -> dict[str, set[int]]:
    """Per key: sequence numbers below its highest record that are not among `records`."""
    held: dict[str, set[int]] = {}
    for r in records:
        held.setdefault(r.key_id, set()).add(r.sequence)
    return {k: set(range(1, max(s) + 1)) - s for k, s in held.items()}


def reported_lost(records: Iterable[VerifiedRecord]) -> dict[str, set[int]]:
    """Per key: the sequence numbers its signed gaps say were lost."""
    out: dict[str, set[int]] = {}
    for r in records:
        for g in r.attestation.gaps:
            if g.lost_sequence_last:
                lost = range(g.lost_sequence_first, g.lost_sequence_last + 1)
                out.setdefault(r.key_id, set()).update(lost)
    return out


def merge(spans: Iterable[Span]) -> list[Span]:
    """Spans joined where they touch or overlap, ascending."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
