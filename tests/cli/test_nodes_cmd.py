"""`flopwatch nodes token|enroll|revoke|list` on a collector database, and `list --collector`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from contextlib import closing

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import public_pem
from flopwatch.statements import ENROLLED, REVOKED, NodeKeyStatement
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, past_node
from tests.nodes import Node, S


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "c.db"
    SQLiteStore(path).close()
    return path


def nodes(db, *args: str) -> list[str]:
    return ["nodes", *args, "--db", f"sqlite:{db}"]


def listing(db, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(nodes(db, "list", "--json", *args)) == 0
    return {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}


def test_token_prints_one_line_and_stores_only_its_hash(db, capsys):
    assert main(nodes(db, "token", "--node", "gpu-1", "--ttl", "2h")) == 0
    out, err = capsys.readouterr()
    [token] = out.splitlines()
    assert re.fullmatch(r"fwe1_[A-Za-z0-9_-]{43}", token)
    assert "one-time enrollment token for node gpu-1, valid until" in err
    with closing(SQLiteStore(db)) as store:
        [[stored, node, expires]] = store._db.execute(
            "SELECT token_hash, node_id, expires_at_ns FROM enroll_tokens"
        ).fetchall()
    assert (stored, node) == (hashlib.sha256(token.encode()).hexdigest(), "gpu-1")
    assert abs(expires - (time.time_ns() + 2 * 3600 * S)) < 60 * S


def test_enroll_from_a_public_key_file_then_revoke_by_prefix(db, tmp_path, capsys):
    node = Node("gpu-2")
    pem = tmp_path / "gpu-2.pub.pem"
    pem.write_text(public_pem(node.key.public_key))
    assert main(nodes(db, "enroll", "--node", "gpu-2", "--public-key", str(pem))) == 0
    assert f"enrolled key {node.key_id} for node gpu-2" in capsys.readouterr().out
    assert listing(db, capsys)["gpu-2"]["status"] == "enrolled"

    assert main(nodes(db, "revoke", node.key_id[:10].upper())) == 0
    assert "refuses its records from its next batch on" in capsys.readouterr().out
    entry = listing(db, capsys)["gpu-2"]
    assert entry["status"] == "revoked" and entry["revoked_at_unix_ns"] > 0
    # Both changes are in the transparency log, signed by the collector key beside the database.
    key = load_collector_key(default_key_path(f"sqlite:{db}"), create=False)
    with closing(SQLiteStore(db)) as store:
        said = [
            NodeKeyStatement.verified(Envelope.from_bytes(e), key.public_key)
            for e in store.log_entries(0, store.log_size())
        ]
    assert [(s.node_id, s.key_id, s.action) for s in said] == [
        ("gpu-2", node.key_id, ENROLLED),
        ("gpu-2", node.key_id, REVOKED),
    ]
    assert said[1].log_size == 1  # the revocation is the leaf at the size it names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enroll", "--public-key", "x.pem"], "--public-key needs --node"),
        (["revoke", "zz-not-hex"], "not a key id"),
        (["revoke", "0123456789abcdef"], "no key 0123456789abcdef"),
        (["enroll", "--key-id", "0123456789abcdef"], "no key"),
        (["token", "--node", "n", "--ttl", "forever"], "positive duration"),
        (["token", "--node", "n", "--ttl", "90d"], "at most"),
    ],
)
def test_bad_input_is_a_usage_error(db, capsys, args, message):
    assert main(nodes(db, *args)) == 2
    assert message in capsys.readouterr().err


def test_approve_a_pending_key_and_list_everything(db, capsys):
    store = SQLiteStore(db, now_ns=lambda: time.time_ns() - 3600 * S)  # an hour ago
    busy, waiting, quiet = past_node("busy", gpus=2), past_node("waiting"), past_node("quiet")
    store.enroll(busy.public_raw, "busy")
    store.enroll(quiet.public_raw, "quiet")  # enrolled an hour ago, never sent: silent
    ingestor = Ingestor(store, ThresholdPolicy([10**30]), [])
    ingestor.ingest(busy.envelopes(2))
    ingestor.ingest([waiting.envelope()], presented_key=waiting.public_raw)
    store.close()
    store = SQLiteStore(db)
    Ingestor(store, ThresholdPolicy([10**30]), []).ingest(busy.envelopes(1))  # busy is busy now
    gpus = {g.gpu: g for g in store.gpu_totals()}
    store.close()

    capsys.readouterr()
    assert main(nodes(db, "list")) == 0
    table = capsys.readouterr().out
    assert "enrolled, SILENT" in table and "pending" in table
    assert "approve with `flopwatch nodes enroll --key-id KEY_ID`" in table
    assert "FLOPs (estimate)" in table and "FLOP model v1" in table

    before = listing(db, capsys)
    assert before["waiting"]["status"] == "pending"
    assert (before["quiet"]["silent"], before["busy"]["silent"]) == (True, False)
    assert before["busy"]["gpus"] == 2 and before["busy"]["gpu_intervals"] == 6
    assert before["busy"]["flops_upper"] == sum(g.flops_upper for g in gpus.values())

    assert main(nodes(db, "enroll", "--key-id", waiting.key_id[:12])) == 0
    assert f"enrolled key {waiting.key_id} for node waiting" in capsys.readouterr().out
    assert listing(db, capsys)["waiting"]["status"] == "enrolled"
    # Nobody is silent with a long enough --silent-after.
    assert not any(n["silent"] for n in listing(db, capsys, "--silent-after", "2h").values())


def _with_a_clock_ahead(db) -> None:
    """n1 sends records in the past; fast's clock runs 10 minutes ahead of ours."""
    node, fast = past_node("n1"), Node("fast", start_ns=time.time_ns() + 600 * S)
    store = SQLiteStore(db)
    store.enroll(node.public_raw, "n1")
    store.enroll(fast.public_raw, "fast")
    acks = Ingestor(store, ThresholdPolicy([10**30]), []).ingest(
        [*node.envelopes(2), fast.envelope()]
    )
    assert [a.status for a in acks] == ["accepted", "accepted", "retry"]
    store.close()


def test_list_shows_a_node_whose_clock_runs_ahead_as_unhealthy(db, capsys):
    _with_a_clock_ahead(db)
    capsys.readouterr()
    assert main(nodes(db, "list")) == 0
    table = capsys.readouterr().out
    [row] = [line for line in table.splitlines() if " fast " in line]
    assert re.search(r"enrolled, CLOCK AHEAD 60\d s", row)
    [other] = [line for line in table.splitlines() if " n1 " in line]
    assert "CLOCK" not in other
    assert "1 key(s) with CLOCK AHEAD" in table and "Fix the node's clock" in table

    listed = listing(db, capsys)
    assert (listed["fast"]["clock_ahead"], listed["fast"]["healthy"]) == (True, False)
    assert 600 <= listed["fast"]["clock_ahead_seconds"] < 700
    assert abs(listed["fast"]["clock_ahead_at_unix_ns"] - time.time_ns()) < 60 * S
    assert (listed["n1"]["clock_ahead"], listed["n1"]["healthy"]) == (False, True)
    assert listed["n1"]["clock_ahead_seconds"] is None


def test_list_from_a_running_collector(db, capsys):
    _with_a_clock_ahead(db)
    from_db = listing(db, capsys)
    assert from_db["fast"]["clock_ahead"]

    async def scenario():
        service = CollectorService(config(db, metrics_listen=None))
        port, _ = await service.start()
        try:
            capsys.readouterr()
            args = ["nodes", "list", "--json", "--collector", f"127.0.0.1:{port}", "--insecure"]
            assert await asyncio.to_thread(main, args) == 0
            return json.loads(capsys.readouterr().out)
        finally:
            await service.stop()

    remote = run(scenario())
    assert remote["silent_after_seconds"] == 300.0
    assert {n["node"]: n for n in remote["nodes"]} == from_db


def test_reject_pending_keys_by_id_or_by_node(db, capsys):
    store = SQLiteStore(db)
    enrolled, one, two, three = Node("gpu-5"), Node("gpu-5"), Node("gpu-5"), Node("gpu-6")
    store.enroll(enrolled.public_raw, "gpu-5")
    ingestor = Ingestor(store, ThresholdPolicy([10**30]), [])
    for n in (one, two, three):
        ingestor.ingest([n.envelope()], presented_key=n.public_raw)
    store.close()

    assert main(nodes(db, "reject", three.key_id[:12])) == 0
    assert f"rejected pending key {three.key_id}" in capsys.readouterr().out
    assert main(nodes(db, "reject", enrolled.key_id)) == 2  # not pending: refused, unchanged
    assert "does not await approval" in capsys.readouterr().err
    assert main(nodes(db, "reject", "--node", "gpu-5")) == 0
    assert "2 key(s) no longer awaiting approval" in capsys.readouterr().err
    assert main(nodes(db, "reject", "--node", "gpu-5")) == 2
    after = {n["key_id"]: n["status"] for n in json.loads(_json_listing(db, capsys))["nodes"]}
    assert after == {enrolled.key_id: "enrolled"}


def _json_listing(db, capsys) -> str:
    capsys.readouterr()
    assert main(nodes(db, "list", "--json")) == 0
    return capsys.readouterr().out
