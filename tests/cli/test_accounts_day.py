"""`flopwatch accounts` names a window by its first and last UTC day."""

from __future__ import annotations

from flopwatch.cli.accounts_cmd import _scope
from flopwatch.v1 import collector_pb2

DAY_NS = 86_400 * 10**9


def test_a_window_ending_at_midnight_shows_the_day_before_as_its_last() -> None:
    today = 20_791  # 2026-12-04
    w = collector_pb2.WindowTotal(
        days=30, start_unix_ns=(today - 29) * DAY_NS, end_unix_ns=(today + 1) * DAY_NS
    )
    assert _scope(w) == "last 30 days (2026-11-05..2026-12-04)"
