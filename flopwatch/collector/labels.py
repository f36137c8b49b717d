"""Metric label values that clients choose (a peer, a node id a record claims), bounded.

Past `cap` distinct values, the rest count under `OTHER`, so hostile input cannot grow the
metrics without end (`ServerLimits.max_label_values`). Not thread-safe: callers hold their own
lock around it.
"""

from __future__ import annotations

OTHER = "other"  # the label value of whatever is past the cap


class BoundedLabels:
    """Up to `cap` distinct values; later ones become OTHER."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value
