"""Ids an operator types (`nodes token|enroll|reject --node`, `report JOB`, `jobs --job`,
`job start|end --job`, `agent --node-id|--cluster`) are checked by the verifier's one
identifier rule, with a clear message, before anything is done: no token is stored for a node
id whose every record the verifier would refuse."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from flopwatch.cli.common import check_identifier
from flopwatch.cli.main import main
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError
from flopwatch.keys import public_pem
from tests.nodes import Node

# (value, what the message says about it)
BAD_IDS = [
    ("gpu-017\x1b[2J", "unprintable character U+001B (Cc) at position 7"),
    ("gpu\x00017", "unprintable character U+0000 (Cc) at position 3"),
    ("gpu-017\nforged", "unprintable character U+000A (Cc) at position 7"),
    ("gpu\u202e710", "unprintable character U+202E (Cf) at position 3"),
    ("gpu\u00a0017", "unprintable character U+00A0 (Zs) at position 3"),
    ("", "is empty"),
    ("g" * 257, "is longer than 256 characters"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "c.db"
    SQLiteStore(path).close()
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err and "an identifier is 1 to 256 printable characters" in err
    assert [c for c in err if not c.isprintable() and c != "\n"] == []  # shown escaped
    assert err.count("\n") == 1  # one line: no forged second line
    return err


@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_nodes_token_refuses_a_node_id_the_verifier_would_refuse(db, capsys, value, message):
    err = _refused(["nodes", "token", "--db", f"sqlite:{db}", "--node", value], capsys, message)
    assert err.startswith("flopwatch nodes: --node '")
    with closing(SQLiteStore(db)) as store:
        assert store._db.execute("SELECT count(*) FROM enroll_tokens").fetchone() == (0,)


def test_the_message_shows_the_id_escaped(db, capsys):
    err = _refused(
        ["nodes", "token", "--db", f"sqlite:{db}", "--node", "gpu-017\x1b[2J"],
        capsys,
        "U+001B",
    )
    assert "--node 'gpu-017\\x1b[2J' holds the unprintable character" in err


def test_nodes_enroll_and_reject_refuse_a_bad_node_id(db, tmp_path, capsys):
    node = Node("gpu-2")
    pem = tmp_path / "gpu-2.pub.pem"
    pem.write_text(public_pem(node.key.public_key))
    url = f"sqlite:{db}"
    _refused(
        ["nodes", "enroll", "--db", url, "--node", "gpu\n2", "--public-key", str(pem)],
        capsys,
        "U+000A",
    )
    _refused(
        ["nodes", "enroll", "--db", url, "--key-id", node.key_id, "--node", ""],
        capsys,
        "is empty",
    )
    _refused(["nodes", "reject", "--db", url, "--node", "gpu\x002"], capsys, "U+0000")
    with closing(SQLiteStore(db)) as store:
        assert store.nodes() == []
    # The same command with a good id works.
    assert main(["nodes", "enroll", "--db", url, "--node", "gpu-2", "--public-key", str(pem)]) == 0


def test_report_refuses_a_bad_job_id_before_opening_anything(tmp_path, capsys):
    out = tmp_path / "x.bundle"
    missing_db = tmp_path / "no.db"  # refused for the id first, not for the database
    _refused(
        ["report", "slurm:c/1\x1b]0;pwned\x07", "--db", f"sqlite:{missing_db}", "--out", str(out)],
        capsys,
        "U+001B",
    )
    assert not out.exists() and not missing_db.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "--collector", "127.0.0.1:1", "--insecure", "--job", "slurm:c/1\r"],
        ["job", "start", "--socket", "/nonexistent/agent.sock", "--job", "12\r"],
        ["job", "end", "--socket", "/nonexistent/agent.sock", "--job", "12\r"],
    ],
)
def test_job_ids_are_checked_before_any_connection(capsys, argv):
    _refused(argv, capsys, "unprintable character U+000D (Cc)")


@pytest.mark.parametrize(("option", "value"), [("--node-id", "n\x1b1"), ("--cluster", "c\u2028")])
def test_the_agent_refuses_a_bad_node_id_or_cluster_at_start(tmp_path, capsys, option, value):
    state = tmp_path / "state"
    argv = [
        "agent",
        "--backend",
        "sim:1",
        "--state-dir",
        str(state),
        "--collector",
        "127.0.0.1:1",
        "--insecure",
        "--node-id",
        "node-1",
        option,
        value,
    ]
    _refused(argv, capsys, f"{option} '")
    assert not state.exists()


def test_check_identifier_passes_a_good_id_through():
    assert check_identifier("--node", "gpu-017.rack 4/ü") == "gpu-017.rack 4/ü"
    with pytest.raises(ConfigError, match="--job 'a\\\\tb' holds"):
        check_identifier("--job", "a\tb")
