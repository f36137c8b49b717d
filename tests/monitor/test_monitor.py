"""The monitor against collectors' logs served as tlog-tiles on loopback: catch-up from an empty
state, restarts that never count twice, totals across two logs, and every reason it reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.agent.records import ChainHead
from flopwatch.keys import SigningKey
from flopwatch.monitor import events
from flopwatch.monitor.labels import Entities
from flopwatch.monitor.service import Monitor
from flopwatch.monitor.totals import Figures, TotalKey, parse_threshold
from flopwatch.monitor.tree_tiles import ENTRY_NOT_IN_TREE, HISTORY_REWRITTEN, TILES_DISAGREE
from flopwatch.statements import RunDeclaration
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Note, Signature, parse_note
from flopwatch.tlog.tiles import TileRef
from flopwatch.v1 import envelope_pb2
from tests.monitor.monitor_helpers import ServedLog, monitor, strip_cosignatures, witness_policy
from tests.nodes import T0, Node, S, expected_totals


@pytest.fixture
def log_a() -> Iterator[ServedLog]:
    log = ServedLog("a.example/log")
    yield log
    log.close()


@pytest.fixture
def log_b() -> Iterator[ServedLog]:
    log = ServedLog("b.example/log")
    yield log
    log.close()


def job_totals(m: Monitor) -> dict[str, list[int]]:
    return {
        key: [f.flops_estimate, f.flops_upper]
        for (kind, key), f in m.state.totals().items()
        if kind == "job"
    }


def reasons(m: Monitor) -> list[str]:
    return [p.reason for p in m.state.problems()]


def totals_of_logs(
    tmp_path: Path, entities: Entities, *logs: tuple[str, ServedLog, Node, list[bytes]]
) -> dict[TotalKey, Figures]:
    """Each log (name, served log, its node, envelopes) published with its node's envelopes,
    then the totals of one monitor caught up on all of them."""
    for _, log, _, envs in logs:
        log.add(envs)
        log.publish()
    configs = [log.log_config(name, tmp_path, [node]) for name, log, node, _ in logs]
    m = monitor(tmp_path, configs, entities=entities)
    try:
        m.catch_up()
        return m.state.totals()
    finally:
        m.close()


def test_catch_up_from_empty_counts_every_entry_once(tmp_path: Path, log_a: ServedLog) -> None:
    node = Node("n1", gpus=2)
    envs = node.envelopes(600)  # bundles 0 and 1 full, 2 partial; tiles at two levels
    log_a.add(envs)
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [node])], max_tiles_per_poll=3)
    try:
        assert m.catch_up() > 1  # the bound splits the catch-up into rounds
        assert m.state.positions() == {"a": (600, 600)}
        assert job_totals(m) == expected_totals([node], envs)
        assert m.state.totals()[("job", "slurm:c/1")].gpu_intervals == 1200
        assert reasons(m) == []
        # The log grows: only the new entries are fetched and counted.
        more = node.envelopes(10)
        log_a.add(more)
        log_a.publish()
        log_a.requests.clear()
        m.catch_up()
        assert m.state.positions() == {"a": (610, 610)}
        assert job_totals(m) == expected_totals([node], envs + more)
        assert "tile/entries/000" not in log_a.requests
    finally:
        m.close()


def test_a_restart_after_every_round_counts_nothing_twice(tmp_path: Path, log_a: ServedLog) -> None:
    node = Node("n1")
    envs = node.envelopes(700)
    log_a.add(envs)
    log_a.publish()
    config = log_a.log_config("a", tmp_path, [node])
    rounds = 0
    while True:
        m = monitor(tmp_path, [config], max_tiles_per_poll=2)
        try:
            behind = m.poll()
            position = m.state.positions()["a"][1]
        finally:
            m.close()
        rounds += 1
        if not behind and position == 700:
            break
        assert rounds < 20
    assert rounds > 2
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        assert job_totals(m) == expected_totals([node], envs)
    finally:
        m.close()


def test_totals_across_two_logs_by_run_account_and_entity(
    tmp_path: Path, log_a: ServedLog, log_b: ServedLog
) -> None:
    # The same job name (a run, as long as records name no run) at two operators.
    n1, n2 = Node("n1", job="slurm:c/7"), Node("n2", job="slurm:c/7")
    e1, e2 = n1.envelopes(20), n2.envelopes(30)
    entities = Entities({"a:": "Acme", "b:": "Acme"})
    totals = totals_of_logs(tmp_path, entities, ("a", log_a, n1, e1), ("b", log_b, n2, e2))
    want = expected_totals([n1, n2], e1 + e2)["slurm:c/7"]
    run = totals[("run", "slurm:c/7")]
    assert [run.flops_estimate, run.flops_upper] == want
    assert totals[("entity", "Acme")].flops_upper == want[1]
    a = expected_totals([n1], e1)["slurm:c/7"][1]
    assert totals[("account", "a:")].flops_upper == a
    assert totals[("account", "b:")].flops_upper == want[1] - a


def test_a_declared_run_is_totalled_across_jobs_operators_and_accounts(
    tmp_path: Path, log_a: ServedLog, log_b: ServedLog
) -> None:
    # One run, "llm-7b", as two jobs at two operators, each under the operator's own account.
    n1, n2 = Node("n1", job="slurm:c/7"), Node("n2", job="k8s:c/ns/pod")
    e1 = [n1.envelope(labels={"run": "llm-7b", "account": "acme"}) for _ in range(12)]
    e2 = [n2.envelope(labels={"run": "llm-7b", "account": "acme-eu"}) for _ in range(8)]
    entities = Entities({"a:acme": "Acme", "b:acme-eu": "Acme"})
    totals = totals_of_logs(tmp_path, entities, ("a", log_a, n1, e1), ("b", log_b, n2, e2))
    one = expected_totals([n1], e1)["slurm:c/7"]
    two = expected_totals([n2], e2)["k8s:c/ns/pod"]
    run = totals[("run", "llm-7b")]
    assert [run.flops_estimate, run.flops_upper] == [one[0] + two[0], one[1] + two[1]]
    assert totals[("account", "a:acme")].flops_upper == one[1]
    assert totals[("account", "b:acme-eu")].flops_upper == two[1]
    assert totals[("entity", "Acme")].flops_upper == one[1] + two[1]
    assert ("run", "slurm:c/7") not in totals  # the job names its run: not a run of its own


def test_thresholds_fire_once_and_stay_fired_across_restarts(
    tmp_path: Path, log_a: ServedLog
) -> None:
    node = Node("n1")
    envs = node.envelopes(10)
    log_a.add(envs)
    log_a.publish()
    upper = expected_totals([node], envs)["slurm:c/1"][1]
    thresholds = [parse_threshold(f"run:{upper}"), parse_threshold(f"run:{upper + 1}")]
    config = log_a.log_config("a", tmp_path, [node])
    m = monitor(tmp_path, [config], thresholds=thresholds)
    try:
        m.catch_up()
        assert m.alerts_fired == 1
        assert m.state.fired() == {(f"run:{upper}:upper", "run", "slurm:c/1")}
    finally:
        m.close()
    log_a.add(node.envelopes(1))
    log_a.publish()
    m = monitor(tmp_path, [config], thresholds=thresholds)
    try:
        m.catch_up()
        assert m.alerts_fired == 1  # the second threshold, never the first again
        assert len(m.state.fired()) == 2
    finally:
        m.close()


def test_a_tampered_entry_is_reported_and_not_counted(tmp_path: Path, log_a: ServedLog) -> None:
    node = Node("n1")
    envs = node.envelopes(5)
    log_a.add(envs)
    log_a.publish()
    bundle = bytearray(log_a.tile_log.read(TileRef(None, 0, 5), 5))
    bundle[-3] ^= 1
    log_a.overrides["tile/entries/000.p/5"] = bytes(bundle)
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [node])])
    try:
        m.catch_up()
        assert reasons(m) == [ENTRY_NOT_IN_TREE]
        assert m.state.positions()["a"] == (5, 0)
        assert job_totals(m) == {}
        del log_a.overrides["tile/entries/000.p/5"]
        m.catch_up()
        assert job_totals(m) == expected_totals([node], envs)
    finally:
        m.close()


def test_a_tampered_tile_is_reported(tmp_path: Path, log_a: ServedLog) -> None:
    node = Node("n1")
    log_a.add(node.envelopes(300))
    log_a.publish()
    log_a.overrides["tile/0/000"] = bytes(32) * 256  # full: checked against its parent
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [node])])
    try:
        m.catch_up()
        assert reasons(m) == [TILES_DISAGREE]
        assert m.state.positions()["a"] == (300, 0)
    finally:
        m.close()


def test_a_rewritten_history_is_reported_and_not_followed(tmp_path: Path, log_a: ServedLog) -> None:
    node, other = Node("n1"), Node("n1", key=None)
    log_a.add(node.envelopes(10))
    log_a.publish()
    config = log_a.log_config("a", tmp_path, [node, other])
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        log_a.rewrite(5, other.envelopes(10))  # 15 leaves, the last 10 another history
        log_a.publish()
        m.catch_up()
        assert reasons(m) == [HISTORY_REWRITTEN]
        assert m.state.positions()["a"] == (10, 10)  # the kept checkpoint stands
        log_a.rewrite(3, [])  # a smaller tree
        log_a.publish()
        m.catch_up()
        assert reasons(m) == [HISTORY_REWRITTEN, events.ROLLBACK]
    finally:
        m.close()


def test_a_checkpoint_lacking_cosignatures_is_not_followed(
    tmp_path: Path, log_a: ServedLog
) -> None:
    w1, w2 = (Cosigner(f"w{i}.example", SigningKey.generate().private_key) for i in (1, 2))
    node = Node("n1")
    envs = node.envelopes(4)
    log_a.add(envs)
    log_a.publish([w1])  # the policy needs both
    config = log_a.log_config("a", tmp_path, [node], policy=witness_policy(w1, w2))
    m = monitor(tmp_path, [config])
    try:
        m.catch_up()
        assert reasons(m) == [events.MISSING_COSIGNATURES]
        assert m.state.positions() == {}
        assert job_totals(m) == {}
        m.catch_up()  # the same checkpoint again: reported once
        assert reasons(m) == [events.MISSING_COSIGNATURES]
        log_a.publish([w1, w2])
        m.catch_up()
        assert job_totals(m) == expected_totals([node], envs)
        # A forged cosignature by a policy witness refuses the checkpoint.
        log_a.add(node.envelopes(1))
        data = log_a.publish([w1, w2])
        note = parse_note(data)
        log_sig, cos1, cos2 = note.signatures
        forged = Signature(cos2.name, cos2.key_id, cos2.sig[:-1] + bytes([cos2.sig[-1] ^ 1]))
        log_a.overrides["checkpoint"] = Note(note.text, (log_sig, cos1, forged)).to_bytes()
        m.catch_up()
        assert reasons(m)[-1] == events.BAD_COSIGNATURE
        assert m.state.positions()["a"] == (4, 4)
        log_a.overrides["checkpoint"] = strip_cosignatures(data)
        m.catch_up()
        assert m.state.positions()["a"] == (4, 4)
    finally:
        m.close()


def test_one_node_chain_forking_across_two_logs_is_reported(
    tmp_path: Path, log_a: ServedLog, log_b: ServedLog
) -> None:
    node = Node("n1")
    envs = node.envelopes(3)
    # Another record 1 of the same key, later in time: sent to another operator's collector.
    twin = node.envelope(builder=node.new_builder(ChainHead()), start_ns=T0 + 100 * S)
    log_a.add(envs)
    log_b.add([envs[0], twin])  # the same record 1 (counted once), then the fork
    log_a.publish()
    log_b.publish()
    m = monitor(
        tmp_path,
        [log_a.log_config("a", tmp_path, [node]), log_b.log_config("b", tmp_path, [node])],
    )
    try:
        m.catch_up()
        problems = m.state.problems()
        assert [(p.log, p.reason, p.subject) for p in problems] == [
            ("b", events.CHAIN_FORK_ACROSS_LOGS, "leaf 1")
        ]
        assert job_totals(m) == expected_totals([node], envs)
        snap = m.snapshot()
        assert snap.logs["b"].duplicates == 1
    finally:
        m.close()


def test_entries_that_fail_verification_or_count_twice_are_reported(
    tmp_path: Path, log_a: ServedLog
) -> None:
    node = Node("n1")
    thief = Node("n2", gpu_prefix="GPU-n1")  # claims n1's GPU for the same seconds
    good = node.envelopes(2)
    msg = envelope_pb2.Envelope()
    msg.ParseFromString(node.envelope())
    msg.signatures[0].sig = bytes(64)
    forged = msg.SerializeToString()
    log_a.add([*good, forged, thief.envelope()])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [node, thief])])
    try:
        m.catch_up()
        assert [(p.reason, p.subject) for p in m.state.problems()] == [
            ("bad_signature", "leaf 2"),
            (events.DOUBLE_COUNTED, "leaf 3"),
        ]
        assert m.state.positions()["a"] == (4, 4)
        assert job_totals(m) == expected_totals([node], good)
    finally:
        m.close()


def test_an_unknown_node_key_stops_the_log_until_it_is_given(
    tmp_path: Path, log_a: ServedLog
) -> None:
    known, stranger = Node("n1"), Node("n2")
    envs = [known.envelope(), stranger.envelope(), known.envelope()]
    log_a.add(envs)
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [known])])
    try:
        m.catch_up()
        assert reasons(m) == [events.UNKNOWN_NODE_KEY]
        assert m.state.positions()["a"] == (3, 1)
    finally:
        m.close()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [known, stranger])])
    try:
        m.catch_up()
        assert m.state.positions()["a"] == (3, 3)
        assert job_totals(m) == expected_totals([known, stranger], envs)
    finally:
        m.close()


def test_an_unreachable_log_is_retried_and_others_go_on(
    tmp_path: Path, log_a: ServedLog, log_b: ServedLog
) -> None:
    node = Node("n1")
    log_a.add(node.envelopes(2))
    log_a.publish()
    config_a = log_a.log_config("a", tmp_path, [node])
    config_b = log_b.log_config("b", tmp_path, [node])  # publishes nothing: 404
    m = monitor(tmp_path, [config_b, config_a])
    try:
        m.catch_up()
        snap = m.snapshot()
        assert snap.logs["b"].problems == {events.UNREACHABLE: 1}
        assert snap.logs["a"].counted == 2
    finally:
        m.close()


def test_a_run_lineage_declaration_leaf_is_verified_and_passed_over(
    tmp_path: Path, log_a: ServedLog
) -> None:
    node = Node("n1")
    envs = node.envelopes(3)
    statement = RunDeclaration(
        account="acme",
        run="llama-ft",
        workload_class="fine-tuning",
        parent_account="acme",
        parent_run="llama",
        declared_at_ns=T0,
    )
    by_log = statement.sign(log_a.key).to_bytes()  # the collector key, which signs the log
    by_other = statement.sign(SigningKey.generate()).to_bytes()
    log_a.add([envs[0], by_log, *envs[1:], by_other])
    log_a.publish()
    m = monitor(tmp_path, [log_a.log_config("a", tmp_path, [node])])
    try:
        m.catch_up()
        # The collector's declaration counts nothing and is no problem; one signed by another
        # key is reported (not a node record gone bad, not an unknown node key).
        assert reasons(m) == ["bad_run_declaration"]
        assert m.state.positions()["a"] == (5, 5)
        assert job_totals(m) == expected_totals([node], envs)
        assert m.followers[0].stats.declarations == 1
    finally:
        m.close()
