"""One spool per node key: a spool another key wrote is set aside, and the new key's chain
starts at sequence 1 (the re-key procedure: docs/operator-guide.md, "Re-keying a node")."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from flopwatch.agent.service import envelope_span, run_agent
from flopwatch.agent.spool.format import AckState
from flopwatch.agent.spool.rekey import open_key_spool, retired_path
from flopwatch.keys import SigningKey, short_key_id
from tests.agent.agent_fakes import FakeCollector, chain, start_sync
from tests.agent.test_service import INTERVALS, collector, config_for, held_records

__all__ = ["collector"]  # the fixture, imported for these tests

MAX, SEGMENT = 1 << 20, 1 << 16


def open_for(directory: Path, key: SigningKey):
    return open_key_spool(
        directory, key.key_id, max_bytes=MAX, segment_bytes=SEGMENT, span_of=envelope_span
    )


def fill(directory: Path, key: SigningKey, n: int, acked: int) -> None:
    spool, _ = open_for(directory, key)
    for seq, env in enumerate(chain(key, n), start=1):
        spool.append(seq, env.to_bytes())
    spool.ack_many(range(1, acked + 1))
    spool.close()


def test_the_same_key_keeps_its_spool_and_chain(tmp_path):
    key = SigningKey.generate()
    fill(tmp_path / "spool", key, 5, acked=3)
    spool, old_end = open_for(tmp_path / "spool", key)
    assert old_end is None
    assert spool.recovery.head.sequence == 5 and spool.recovery.head.key_id == key.key_id
    assert spool.depth() == 2
    spool.close()


def test_another_key_gets_a_fresh_spool_and_the_old_one_is_kept_aside(tmp_path, caplog):
    old, new = SigningKey.generate(), SigningKey.generate()
    fill(tmp_path / "spool", old, 5, acked=3)
    with caplog.at_level(logging.WARNING):
        spool, _ = open_for(tmp_path / "spool", new)
    assert spool.recovery.head is None and spool.depth() == 0
    spool.append(1, chain(new, 1)[0].to_bytes())  # the new chain starts at 1
    spool.close()
    aside = tmp_path / f"spool.retired-{short_key_id(old.key_id)}"
    assert "2 record(s) never acknowledged" in caplog.text and str(aside) in caplog.text
    kept, _ = open_for(aside, old)  # the old key's unacknowledged records are still there
    assert [s for s, _ in kept.pending()] == [4, 5]
    kept.close()
    assert retired_path(tmp_path / "spool", old.key_id).name.endswith(".2")  # never clobbered


def test_an_ack_state_from_before_key_ids_still_reads():
    """Ack states written before the chain base named its key parse, with no key id (the
    spool then takes it for this key's: the chain goes on, as before)."""
    old = {"version": 1, "settled": [[1, 4]], "base": {"sequence": 4, "digest": "00" * 32,
           "end_ns": None}, "unreported": [], "reporting": []}  # fmt: skip
    base = AckState.from_bytes(json.dumps(old).encode()).base
    assert base is not None and (base.sequence, base.key_id) == (4, None)
    assert b'"key_id":"ab"' in AckState(base=replace(base, key_id="ab")).to_bytes()


def test_a_re_keyed_agent_starts_its_new_chain_at_one(tmp_path, collector, caplog):
    """The reported failure: after revocation and a new key, the agent went on with the old
    sequence numbers, so the collector counted every earlier number as missing, forever."""
    fake, port = collector
    config = config_for(tmp_path, port)
    assert run_agent(config) == 0
    old = SigningKey.load(config.key_path)
    assert sorted(fake.held) == list(range(1, INTERVALS + 1))

    config.key_path.unlink()  # the procedure: revoke at the collector, remove the key file
    second = FakeCollector()
    server, second_port = start_sync(second)
    try:
        with caplog.at_level(logging.INFO):
            assert run_agent(replace(config, collector=f"127.0.0.1:{second_port}")) == 0
    finally:
        server.stop(None)
    new = SigningKey.load(config.key_path)
    assert new.key_id != old.key_id
    records = held_records(second, new)
    assert [r.sequence for r in records] == list(range(1, INTERVALS + 1))
    assert records[0].previous_digest == b"" and records[0].key_id == new.key_id
    assert "next sequence 1," in caplog.text
    assert (tmp_path / "state" / f"spool.retired-{short_key_id(old.key_id)}").is_dir()
