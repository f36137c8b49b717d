"""The monitor learns each log's node keys from the log's node key statements (signed by the log
key), in log order: records of keys enrolled before them count; a record before its key's
enrollment stops the log until the key is pinned; records at or past a revocation, or of another
node than the key's, are findings; the regulator's pins restrict what the log may enroll; the
statements count no compute, and what was learnt survives a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.keys import SigningKey
from flopwatch.monitor import events
from flopwatch.monitor.state import SCHEMA_VERSION, MonitorState
from flopwatch.statements import BAD_NODE_KEY_STATEMENT, REVOKED
from tests.monitor.monitor_helpers import ServedLog, monitor
from tests.monitor.test_monitor import job_totals, reasons
from tests.nodes import Node, expected_totals


@pytest.fixture
def log_a() -> Iterator[ServedLog]:
    log = ServedLog("a.example/log")
    yield log
    log.close()


def test_keys_enrolled_in_the_log_count_without_pins_and_survive_a_restart(
    tmp_path: Path, log_a: ServedLog
) -> None:
    n1, n2 = Node("n1"), Node("n2")
    first = [n1.envelope(), n1.envelope(), n2.envelope()]
    log_a.add([log_a.key_statement(n1), *first[:2], log_a.key_statement(n2), first[2]])
    log_a.publish()
    config = log_a.log_config("a", tmp_path, None)
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        assert reasons(m) == []
        assert m.state.positions()["a"] == (5, 5)
        assert m.followers[0].stats.key_statements == 2
        assert sorted(k.node_id for k in m.state.log_keys("a").values()) == ["n1", "n2"]
    finally:
        m.close()
    # After a restart the keys learnt are still known: new records of both count.
    later = [n1.envelope(), n2.envelope()]
    log_a.add(later)
    log_a.publish()
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        assert reasons(m) == []
        assert m.state.positions()["a"] == (7, 7)
        # The statements count no compute: the totals are the records' alone.
        assert job_totals(m) == expected_totals([n1, n2], [*first, *later])
    finally:
        m.close()


def test_a_record_before_its_keys_enrollment_stops_the_log_until_pinned(
    tmp_path: Path, log_a: ServedLog
) -> None:
    n1 = Node("n1")
    envs = [n1.envelope(), n1.envelope()]
    log_a.add([envs[0], log_a.key_statement(n1), envs[1]])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, None)])
    try:
        m.catch_up()
        assert reasons(m) == [events.UNKNOWN_NODE_KEY]
        assert "did not enroll before it" in m.state.problems()[0].detail
        assert m.state.positions()["a"] == (3, 0)
    finally:
        m.close()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [n1])])  # the regulator pins it
    try:
        m.catch_up()
        assert m.state.positions()["a"] == (3, 3)
        assert job_totals(m) == expected_totals([n1], envs)
    finally:
        m.close()


def test_records_at_or_past_a_revocation_are_findings_not_counted(
    tmp_path: Path, log_a: ServedLog
) -> None:
    n1 = Node("n1")
    before, after = n1.envelope(), n1.envelope()
    # leaf 0 enrolls, leaf 1 a record, leaf 2 revokes at log size 2, leaf 3 a record after it.
    log_a.add([log_a.key_statement(n1), before, log_a.key_statement(n1, REVOKED, 2), after])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, None)])
    try:
        m.catch_up()
        assert reasons(m) == [events.REVOKED_NODE_KEY]
        assert m.state.problems()[0].subject == "leaf 3"
        assert m.state.positions()["a"] == (4, 4)
        assert job_totals(m) == expected_totals([n1], [before])
        [key] = m.state.log_keys("a").values()
        assert (key.revoked_leaf, key.revoked_from) == (2, 2)
    finally:
        m.close()


@pytest.mark.parametrize("read_apart", [False, True])  # the record committed before, or with
def test_a_revocation_logged_late_reports_the_records_counted_past_its_size(
    tmp_path: Path, log_a: ServedLog, read_apart: bool
) -> None:
    n1 = Node("n1")
    ok, late = n1.envelope(), n1.envelope()
    # The revocation names log size 2 but is logged at leaf 3, after a record at leaf 2.
    log_a.add([log_a.key_statement(n1), ok, late])
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, None)])
    try:
        if read_apart:
            log_a.publish()
            m.catch_up()
            assert m.state.problems() == []
        log_a.add([log_a.key_statement(n1, REVOKED, 2)])
        log_a.publish()
        m.catch_up()
        assert [(p.reason, p.subject) for p in m.state.problems()] == [
            (events.REVOKED_NODE_KEY, "leaf 2")
        ]
        assert m.state.positions()["a"] == (4, 4)
    finally:
        m.close()


def test_a_statement_not_signed_by_the_log_key_is_a_finding_and_teaches_nothing(
    tmp_path: Path, log_a: ServedLog
) -> None:
    n1 = Node("n1")
    forged = ServedLog.__new__(ServedLog)
    forged.key = SigningKey.generate()  # another collector's key
    log_a.add([forged.key_statement(n1), n1.envelope()])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, None)])
    try:
        m.catch_up()
        assert reasons(m) == [BAD_NODE_KEY_STATEMENT, events.UNKNOWN_NODE_KEY]
        assert m.state.positions()["a"] == (2, 1)
        assert m.state.log_keys("a") == {}
    finally:
        m.close()


def test_pins_restrict_what_the_log_may_enroll(tmp_path: Path, log_a: ServedLog) -> None:
    pinned, other = Node("n1"), Node("n2")
    envs = [pinned.envelope()]
    log_a.add([log_a.key_statement(pinned), *envs, log_a.key_statement(other), other.envelope()])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [pinned])])
    try:
        m.catch_up()
        # The unpinned key is reported and not learnt: its record stops the log.
        assert reasons(m) == [events.NODE_KEY_NOT_PINNED, events.UNKNOWN_NODE_KEY]
        assert m.state.positions()["a"] == (4, 3)
        assert job_totals(m) == expected_totals([pinned], envs)
    finally:
        m.close()


def test_a_record_of_another_node_than_its_keys_is_a_finding(
    tmp_path: Path, log_a: ServedLog
) -> None:
    n1 = Node("n1")
    impostor = Node("n9", key=n1.key)  # n1's key, signing records that say node n9
    log_a.add([log_a.key_statement(n1), impostor.envelope()])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, None)])
    try:
        m.catch_up()
        assert reasons(m) == [events.NODE_KEY_MISMATCH]
        assert job_totals(m) == {}
    finally:
        m.close()


def test_a_version_1_state_gains_the_log_keys_table(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    MonitorState(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE log_keys")
    db.execute("DROP TABLE day_totals")  # a later version's
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    state = MonitorState(path)
    try:
        assert state.log_keys("a") == {}
        assert state.days() == {}
    finally:
        state.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
