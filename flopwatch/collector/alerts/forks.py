"""Chain forks: counted per node key, alerted once per key per collector run.

A fork is a record signed by a key for a place in its chain where the collector holds a
different one: the key signed two histories (a cloned key, or an agent whose state was restored
from an old backup). The ingestor refuses such a record; this tracker counts it for
flopwatch_chain_forks_total and hands out an alert for a key's first fork only, since a key that
forks once usually forks on every record that follows.

Forks found while judging a batch are kept aside (`found`) and counted only once the batch is
settled (`settle`), so a batch judged again after a store conflict does not count them twice.
Thread safety: `counts()` may be called from any thread (the metrics scrape).
"""

from __future__ import annotations

import threading

from flopwatch.collector.alerts.events import ChainFork
from flopwatch.verify.record import VerifiedRecord


class ForkTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}  # (key_id, node) -> forks
        self._alerted: set[str] = set()
        self._found: dict[tuple[str, int], tuple[VerifiedRecord, str]] = {}

    def start_batch(self) -> None:
        self._found = {}

    def found(self, record: VerifiedRecord, detail: str) -> None:
        self._found[(record.key_id, record.sequence)] = (record, detail)

    def settle(self, now_ns: int) -> list[ChainFork]:
        """Count the batch's forks; return the events to alert."""
        events = []
        with self._lock:
            for r, detail in self._found.values():
                key = (r.key_id, r.node_id)
                self._counts[key] = self._counts.get(key, 0) + 1
                if r.key_id not in self._alerted:
                    self._alerted.add(r.key_id)
                    events.append(ChainFork(r.key_id, r.node_id, r.sequence, detail, now_ns))
        self._found = {}
        return events

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)
