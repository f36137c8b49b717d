"""One spool per node key: a re-keyed node starts a new chain at sequence 1.

Sequence numbers and the hash chain belong to a key (flopwatch.chain). When the agent starts
with a key other than the one that signed the spool's chain head (the operator revoked the old
key and removed its file, and the agent created a new one), continuing the old numbers would
leave the new key's chain with a hole below its first record, reported as missing records
forever. So `open_key_spool` moves the old spool aside, to `<spool>.retired-<old key id, 16
hex>` beside it, with whatever it still holds, and opens an empty one: the new key's first
record is sequence 1. The old chain ends where it ended; records still unacknowledged in the
retired spool are not sent (a revoked key's records are refused anyway) and are logged. The
caller signs an AGENT_RESTART gap from the old chain's last record to the new key's first.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flopwatch.agent.spool.store import SpanOf, Spool
from flopwatch.errors import SpoolError
from flopwatch.keys import short_key_id

log = logging.getLogger(__name__)

RETIRED_INFIX = ".retired-"


def retired_path(directory: Path, key_id: str) -> Path:
    """Where the spool of an earlier key is set aside (a number added if it exists)."""
    base = directory.with_name(directory.name + RETIRED_INFIX + short_key_id(key_id))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}.{n}")
    return path


def open_key_spool(
    directory: Path,
    key_id: str,
    *,
    max_bytes: int,
    segment_bytes: int,
    span_of: SpanOf | None = None,
) -> tuple[Spool, int | None]:
    """Open the spool of `key_id`'s chain. Returns it and, when the spool found was another
    key's (and set aside), the end time of that key's last record (None if unknown or if
    the spool was this key's)."""
    spool = Spool(directory, max_bytes=max_bytes, segment_bytes=segment_bytes, span_of=span_of)
    head = spool.recovery.head
    if head is None or head.key_id is None or head.key_id == key_id:
        return spool, None
    unsent = spool.depth()
    spool.close()
    retired = retired_path(directory, head.key_id)
    try:
        directory.rename(retired)
    except OSError as e:
        raise SpoolError(f"cannot set aside the spool of key {head.key_id}: {e}") from e
    log.warning(
        "node key changed from %s to %s: a new chain starts at sequence 1; the old key's "
        "spool (chain ended at sequence %d, %d record(s) never acknowledged) is kept in %s",
        short_key_id(head.key_id),
        short_key_id(key_id),
        head.sequence,
        unsent,
        retired,
    )
    fresh = Spool(directory, max_bytes=max_bytes, segment_bytes=segment_bytes, span_of=span_of)
    return fresh, head.end_ns
