"""What a person reads is escaped: ids holding escape sequences or newlines (a database from
before the identifier rule, a peer's text) never reach a terminal or a log line raw."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing

import pytest

from flopwatch.cli.common import setup_logging
from flopwatch.cli.jobs_cmd import job_table, table
from flopwatch.cli.main import main
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey, public_raw
from flopwatch.v1 import collector_pb2
from tests.nodes import NOW, Node

HOSTILE = "evil\x1b[2J\x1b[31m\nforged line\r\u202e\x00"
ESCAPED = "evil\\x1b[2J\\x1b[31m\\nforged line\\r\\u202e\\x00"


def raw_control(text: str) -> list[str]:
    return [c for c in text if c not in "\n" and not c.isprintable()]


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_nodes_list_escapes_node_ids_of_enrolled_and_pending_keys(tmp_path, capsys):
    db = tmp_path / "c.db"
    with closing(SQLiteStore(db)) as store:  # written directly: as an old database holds them
        store.enroll(public_raw(SigningKey.generate().public_key), HOSTILE)
        store.note_pending_key(
            public_raw(SigningKey.generate().public_key), HOSTILE + "p", PendingKeyLimits()
        )
    capsys.readouterr()

    assert main(["nodes", "list", "--db", f"sqlite:{db}"]) == 0

    out = capsys.readouterr().out
    assert raw_control(out) == []
    lines = out.splitlines()
    assert sum(ESCAPED in line for line in lines) == 2
    assert not any(line.startswith("forged line") for line in lines)


def test_jobs_tables_escape_job_node_and_gpu_ids():
    jobs = collector_pb2.ListJobsResponse(
        jobs=[collector_pb2.JobTotal(job_id=HOSTILE, flops_estimate="1", flops_upper="2")]
    )
    one = collector_pb2.ListJobGpusResponse(
        job=collector_pb2.JobTotal(job_id=HOSTILE, flops_estimate="1", flops_upper="2"),
        gpus=[
            collector_pb2.JobGpu(
                node_id=HOSTILE,
                key_id="ab" * 32,
                gpu_uuid=HOSTILE,
                flops_estimate="1",
                flops_upper="2",
            )
        ],
    )
    for text in (table(jobs), job_table(one)):
        assert raw_control(text) == []
        assert ESCAPED in text
        assert "\nforged line" not in text


def test_log_lines_escape_what_an_unenrolled_key_sends(tmp_path, capsys, root_logging):
    """A stranger's envelope names key ids of its choosing; the rejection is logged on one line."""
    setup_logging("INFO")
    node = Node()
    env = node.env()
    forged = Envelope(env.payload, env.payload_type, ((HOSTILE, env.signatures[0][1]),))
    with closing(SQLiteStore(tmp_path / "c.db")) as store:
        ingestor = Ingestor(store, ThresholdPolicy([10**25]), [], now_ns=lambda: NOW)
        capsys.readouterr()
        [ack] = ingestor.ingest([forged.to_bytes()])

    assert (ack.status, ack.reason) == ("rejected", "unknown_key")
    err = capsys.readouterr().err
    assert "rejected record" in err
    assert raw_control(err) == []
    assert all("forged line" not in line.split(":")[0] for line in err.splitlines())
    assert len([line for line in err.splitlines() if "rejected record" in line]) == 1


def test_log_formatter_keeps_a_message_on_one_line(capsys, root_logging):
    setup_logging("INFO")
    logging.getLogger("flopwatch.test").warning("job %s crossed", HOSTILE)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ESCAPED in err
