"""`flopwatch monitor` from the command line: a logs file, node keys, a threshold, --once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from flopwatch.keys import public_pem
from tests.monitor.monitor_helpers import TOKEN, ServedLog
from tests.nodes import Node, expected_totals


def write_logs(tmp: Path, log: ServedLog, nodes: list[Node]) -> Path:
    (tmp / "nodes.pem").write_text("".join(public_pem(n.key.public_key) for n in nodes))
    token = tmp / "a.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    logs = tmp / "logs.toml"
    logs.write_text(
        "[[log]]\n"
        'name = "a"\n'
        f'url = "{log.url}"\n'
        f'vkey = "{log.tile_log.signer.verifier.vkey()}"\n'
        'node_keys = "nodes.pem"\n'
        'token_file = "a.token"\n'
    )
    return logs


@pytest.fixture
def served():
    log = ServedLog("a.example/log")
    yield log
    log.close()


def test_once_catches_up_and_prints_totals(tmp_path, served, capsys):
    node = Node("n1")
    envs = node.envelopes(5)
    served.add(envs)
    served.publish()
    logs = write_logs(tmp_path, served, [node])
    config = tmp_path / "monitor.toml"
    config.write_text(f'logs = "{logs}"\nthresholds = ["run:1", "entity:1e30"]\n')
    args = ["monitor", "--config", str(config), "--state", str(tmp_path / "m.db")]
    assert main([*args, "--once", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["logs"] == {"a": {"checkpoint": 5, "position": 5}}
    job = next(t for t in out["totals"] if t["kind"] == "job")
    assert [int(job["flops_estimate"]), int(job["flops_upper"])] == expected_totals([node], envs)[
        "slurm:c/1"
    ]
    assert out["problems"] == []


def test_a_problem_exits_1_and_bad_config_exits_2(tmp_path, served, capsys):
    node, stranger = Node("n1"), Node("n2")
    served.add([stranger.envelope()])
    served.publish()
    logs = write_logs(tmp_path, served, [node])
    args = ["monitor", "--logs", str(logs), "--state", str(tmp_path / "m.db"), "--once"]
    assert main(args) == 1
    assert "unknown_node_key" in capsys.readouterr().out
    assert main([*args, "--thresholds", "galaxy:1e26"]) == 2
    assert "KIND" in capsys.readouterr().err
    (tmp_path / "nodes.pem").write_text("not a key")
    assert main(args) == 2
    assert "no PEM public key" in capsys.readouterr().err
