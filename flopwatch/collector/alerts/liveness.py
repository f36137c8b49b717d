"""Silent nodes: an enrolled key that has committed no record for longer than a timeout.

`LivenessMonitor.check()` runs on the collector's ingest thread (it uses the store) every
`liveness_check_s`. It reads every key's last-record time from the store, so the answer is right
after a restart and when several collectors share one database. A silence episode starts at the
key's last record (or its enrollment, if it never sent one) and ends with its next record; it is
alerted once: `Store.claim_silence_alert` records which episode was alerted, so neither a restart
nor a second collector repeats the alert. Revoked keys are not watched.

`snapshot()` is what the metrics endpoint reads (from any thread): per enrolled key, its last
record time and whether it is silent, as of the latest check (so it lags by up to one check).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flopwatch.collector.alerts.events import AlertSink, NodeSilent, notify
from flopwatch.collector.store.base import NodeTrustStore
from flopwatch.collector.store.records import NodeRecord
from flopwatch.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLiveness:
    key_id: str
    node_id: str
    last_record_ns: int | None  # collector clock; None: never sent a record
    silent: bool


def silence_start(node: NodeRecord) -> int:
    """When the node's current quiet began: its last record, else its enrollment."""
    return node.last_record_ns if node.last_record_ns is not None else node.enrolled_at_ns


def is_silent(node: NodeRecord, now_ns: int, silent_after_ns: int) -> bool:
    return node.status == "enrolled" and now_ns - silence_start(node) > silent_after_ns


class LivenessMonitor:
    """Finds silent nodes and alerts each silence once; see the module docstring."""

    def __init__(
        self,
        store: NodeTrustStore,
        sinks: Sequence[AlertSink],
        *,
        silent_after_s: float,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if silent_after_s <= 0:
            raise ConfigError("--silent-after must be positive")
        self._store = store
        self._sinks = tuple(sinks)
        self.silent_after_s = silent_after_s
        self._silent_after_ns = int(silent_after_s * 1e9)
        self._now_ns = now_ns
        self._lock = threading.Lock()
        self._view: tuple[NodeLiveness, ...] = ()

    def check(self) -> list[NodeSilent]:
        """Look for silent nodes now; alert the new silences; return them. Ingest thread only.

        Raises StoreError if the store cannot be read; the next check tries again.
        """
        now = self._now_ns()
        view: list[NodeLiveness] = []
        events: list[NodeSilent] = []
        for node in self._store.nodes():
            if node.status != "enrolled":
                continue
            silent = is_silent(node, now, self._silent_after_ns)
            view.append(NodeLiveness(node.key_id, node.node_id, node.last_record_ns, silent))
            since = silence_start(node)
            if silent and self._store.claim_silence_alert(node.key_id, since):
                events.append(
                    NodeSilent(
                        key_id=node.key_id,
                        node_id=node.node_id,
                        since_ns=since,
                        never_sent=node.last_record_ns is None,
                        silent_after_s=self.silent_after_s,
                        at_ns=now,
                    )
                )
        with self._lock:
            self._view = tuple(view)
        notify(self._sinks, events)
        return events

    def snapshot(self) -> tuple[NodeLiveness, ...]:
        with self._lock:
            return self._view
