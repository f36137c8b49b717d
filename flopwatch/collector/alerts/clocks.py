"""Nodes whose clock runs ahead: counted per node key, alerted once per episode.

A record whose time ends later than the collector's clock plus the allowed skew
(`Limits.max_clock_skew_ns`) is answered "retry", not refused: it may be sound, and its time
not yet come, so the agent keeps it and sends it again. Meanwhile the node is unhealthy: its
records wait in its spool. This tracker counts such records per (key, node) for
flopwatch_records_future_total, keeps how far ahead each key's latest one was
(flopwatch_node_clock_ahead_seconds, and `nodes list --collector`), and hands out one
`ClockAhead` alert per episode: from a key's first record ahead until the collector accepts one
of its records again. What it found is also handed to the store (`notes`: at the start of an
episode, then at most every `NOTE_EVERY_S` per key), so `nodes list` shows the node unhealthy,
also after a restart and from another collector sharing the store, until one of its records
is committed again.

Like forks, what a batch finds is kept aside (`found`) and counted when the batch is settled
(`settle`), so a batch judged again after a store conflict does not count twice. `ahead()` and
`counts()` may be called from any thread (the metrics scrape, the query servicer).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

from flopwatch.collector.store.records import ClockNote

# Seconds between two store writes of one key's clock while it stays ahead (the first record
# of an episode is always written): a flood of records ahead costs no write per batch.
NOTE_EVERY_S = 60.0


@dataclass(frozen=True)
class ClockAhead:
    """A node key signed a record whose time ends beyond the collector's clock plus the skew."""

    key_id: str
    node_id: str
    ahead_s: float  # how far its time ends after the collector's clock
    allowed_s: float  # the allowed skew
    at_ns: int


class ClockTracker:
    def __init__(self, allowed_skew_ns: int) -> None:
        self._allowed_s = allowed_skew_ns / 1e9
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}  # (key_id, node) -> records ahead
        self._ahead: dict[tuple[str, str], float] = {}  # keys now ahead -> latest seconds
        self._alerted: set[str] = set()
        self._found: dict[tuple[str, int], tuple[str, float]] = {}
        self._noted_at: dict[str, int] = {}  # key_id -> when its clock was last handed out
        self._notes: dict[str, ClockNote] = {}  # of the last settle

    def start_batch(self) -> None:
        self._found = {}

    def found(self, key_id: str, node_id: str, sequence: int, ahead_s: float) -> None:
        """A record of `key_id` (enrolled for `node_id`) was answered retry for its clock."""
        self._found[(key_id, sequence)] = (node_id, ahead_s)

    def settle(self, accepted_keys: Collection[str], now_ns: int) -> list[ClockAhead]:
        """Count the batch's records ahead; end the episodes of keys that had a record
        accepted; return the alerts of episodes that began."""
        events = []
        self._notes = {}
        with self._lock:
            for key_id in accepted_keys:
                self._alerted.discard(key_id)
                self._noted_at.pop(key_id, None)
                for key in [k for k in self._ahead if k[0] == key_id]:
                    del self._ahead[key]
            for (key_id, _), (node_id, ahead_s) in self._found.items():
                key = (key_id, node_id)
                self._counts[key] = self._counts.get(key, 0) + 1
                self._ahead[key] = ahead_s
                if key_id not in self._alerted:
                    self._alerted.add(key_id)
                    events.append(ClockAhead(key_id, node_id, ahead_s, self._allowed_s, now_ns))
                noted = self._noted_at.get(key_id)
                if noted is None or noted == now_ns or now_ns - noted >= NOTE_EVERY_S * 1e9:
                    self._noted_at[key_id] = now_ns
                    self._notes[key_id] = ClockNote(key_id, round(ahead_s * 1e9), now_ns)
        self._found = {}
        return events

    def notes(self) -> list[ClockNote]:
        """What the last `settle` found for the store: per key, its latest record ahead, at
        the start of an episode and then at most every NOTE_EVERY_S."""
        return sorted(self._notes.values(), key=lambda n: n.key_id)

    def unnoted(self, notes: Collection[ClockNote]) -> None:
        """The store could not keep `notes`: hand them out again with the next settle."""
        with self._lock:
            for n in notes:
                if self._noted_at.get(n.key_id) == n.at_ns:
                    del self._noted_at[n.key_id]

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def ahead(self) -> dict[tuple[str, str], float]:
        """(key_id, node) -> seconds ahead, for keys whose latest record was ahead."""
        with self._lock:
            return dict(self._ahead)
