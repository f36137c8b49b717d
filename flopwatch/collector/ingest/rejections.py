"""Rejected records: counted per node and per peer, logged once per peer per period.

A peer sending garbage gets every record refused; a line per record would let it write the
collector's log at network speed. Instead the first rejection from a peer is logged at once,
with its reason and detail (what an operator needs to fix a misconfigured node), and the rest
are counted and summed up in one line per peer every `interval_s`:
"10.0.0.7: 1200 record(s) rejected in the last 60 s (malformed 1190, unknown_key 10)".

Metrics count rejections by reason per node (the node the signing key is enrolled for; none
for a key nobody enrolled) and per peer. Label values are bounded: past `max_label_values`
distinct nodes (or peers) the rest count as "other", so hostile input cannot grow the metrics.

Thread-safe: `note` runs on the ingest thread, `flush` on the event loop, `counts` on the
metrics scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flopwatch.collector.labels import OTHER, BoundedLabels

__all__ = ["NO_PEER", "OTHER", "RejectionCounts", "Rejections"]

log = logging.getLogger(__name__)

NO_PEER = "local"  # records ingested without a stream (tests, replay)


@dataclass(frozen=True)
class RejectionCounts:
    by_node: Mapping[tuple[str, str], int]  # (node, reason) -> records
    by_peer: Mapping[tuple[str, str], int]  # (peer, reason) -> records
    log_lines: int  # lines written about rejections
    suppressed: int  # rejections counted in a summary instead of a line of their own


class Rejections:
    def __init__(
        self,
        *,
        interval_s: float = 60.0,
        max_label_values: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._node_label = BoundedLabels(max_label_values)
        self._peer_label = BoundedLabels(max_label_values)
        self._by_node: Counter[tuple[str, str]] = Counter()
        self._by_peer: Counter[tuple[str, str]] = Counter()
        self._last_line: dict[str, float] = {}  # peer -> when its last line was written
        self._pending: dict[str, Counter[str]] = {}  # peer -> reasons not yet logged
        self._lines = 0
        self._suppressed = 0

    def note(
        self, peer: str, node: str | None, reason: str, detail: str, *, key_id: str, sequence: int
    ) -> None:
        """Count one rejected record from `peer` (signed by a key of `node`, if enrolled)."""
        now = self._clock()
        with self._lock:
            source = self._peer_label(peer or NO_PEER)
            self._by_peer[(source, reason)] += 1
            if node is not None:
                self._by_node[(self._node_label(node), reason)] += 1
            last = self._last_line.get(source)
            if last is None or now - last >= self._interval:
                pending = self._pending.pop(source, Counter())
                self._last_line[source] = now
                self._lines += 1
            else:
                self._pending.setdefault(source, Counter())[reason] += 1
                self._suppressed += 1
                return
        # Outside the lock. Unverified text: %r, so no control characters reach the log.
        log.warning(
            "rejected record from %s: key %r sequence %d: %s: %r%s",
            source,
            key_id[:16] or "?",
            sequence,
            reason,
            detail[:200],
            _earlier(pending, self._interval),
        )

    def flush(self, *, everything: bool = False) -> None:
        """Write the summary line of every peer whose period is over (`everything`: of every
        peer, as the collector stops) and that has rejections not logged yet; forget peers
        quiet for a period."""
        now = self._clock()
        lines = []
        with self._lock:
            for source, last in list(self._last_line.items()):
                if now - last < self._interval and not everything:
                    continue
                pending = self._pending.pop(source, None)
                if pending:
                    self._last_line[source] = now
                    self._lines += 1
                    lines.append((source, pending))
                else:
                    del self._last_line[source]
        for source, pending in lines:
            log.warning(
                "%s: %d record(s) rejected in the last %.0f s (%s)",
                source,
                sum(pending.values()),
                self._interval,
                _reasons(pending),
            )

    def counts(self) -> RejectionCounts:
        with self._lock:
            return RejectionCounts(
                dict(self._by_node), dict(self._by_peer), self._lines, self._suppressed
            )


def _reasons(reasons: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())


def _earlier(pending: Counter[str], interval_s: float) -> str:
    if not pending:
        return f"; more from this peer are summed up every {interval_s:.0f} s"
    return f"; {sum(pending.values())} more before it, not logged ({_reasons(pending)})"
