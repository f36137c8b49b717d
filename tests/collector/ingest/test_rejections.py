"""Rejected records: one log line per peer per period, counts per node and peer, bounded labels."""

from __future__ import annotations

import logging

import pytest

from flopwatch.collector.ingest.rejections import OTHER, Rejections


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.endswith("rejections")]


def test_a_flood_writes_one_line_at_once_and_one_summary_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    r = Rejections(interval_s=60, clock=clock)
    for i in range(10_000):
        reason = "malformed" if i % 2 else "unknown_key"
        r.note("10.0.0.7", None, reason, "x", key_id="", sequence=0)
    r.note("10.0.0.8", "gpu-017", "overlap", "GPU g: [1, 2) overlaps", key_id="ab" * 32, sequence=5)
    first = lines(caplog)
    assert len(first) == 2  # the first rejection of each peer, at once
    assert first[0].startswith("rejected record from 10.0.0.7: key '?' sequence 0: unknown_key")
    assert "overlap" in first[1] and "'abababababababab'" in first[1]

    r.flush()  # the period is not over: nothing
    assert len(lines(caplog)) == 2
    clock.now += 60
    r.flush()
    summary = lines(caplog)[2:]
    assert summary == [
        "10.0.0.7: 9999 record(s) rejected in the last 60 s (malformed 5000, unknown_key 4999)"
    ]  # 10.0.0.8 had nothing more to say
    counts = r.counts()
    assert counts.log_lines == 3 and counts.suppressed == 9999
    assert counts.by_peer[("10.0.0.7", "malformed")] == 5000
    assert counts.by_node == {("gpu-017", "overlap"): 1}  # only enrolled keys have a node


def test_a_peer_quiet_for_a_period_gets_its_next_rejection_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    r = Rejections(interval_s=60, clock=clock)
    r.note("p", None, "malformed", "x", key_id="", sequence=0)
    clock.now += 61
    r.flush()  # nothing pending: forgotten
    r.note("p", None, "malformed", "y", key_id="", sequence=0)
    assert len(lines(caplog)) == 2


def test_control_characters_in_details_never_reach_the_log_raw(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    Rejections().note("p", None, "malformed", "job \x1b[2J\nfake line", key_id="", sequence=0)
    [line] = lines(caplog)
    assert "\x1b" not in line and "\n" not in line


def test_label_values_are_capped() -> None:
    r = Rejections(max_label_values=3)
    for i in range(10):
        r.note(f"peer-{i}", f"node-{i}", "malformed", "", key_id="", sequence=0)
    counts = r.counts()
    assert {p for p, _ in counts.by_peer} == {"peer-0", "peer-1", "peer-2", OTHER}
    assert counts.by_peer[(OTHER, "malformed")] == 7
    assert {n for n, _ in counts.by_node} == {"node-0", "node-1", "node-2", OTHER}
