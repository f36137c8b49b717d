"""Options from a TOML file and the environment: precedence, types, unknown keys; wired into
`flopwatch agent` and `flopwatch collector` (their runners are replaced to capture the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flopwatch.agent.service
import flopwatch.collector.server
from flopwatch.cli.main import main


@pytest.fixture
def agent_config(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Runs of `flopwatch agent` capture their AgentConfig here instead of starting."""
    seen: list[Any] = []
    monkeypatch.setattr(
        flopwatch.agent.service, "run_agent", lambda config, stop=None: seen.append(config) or 0
    )
    return seen


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def agent_run(args: list[str], seen: list[Any]) -> Any:
    assert main(["agent", *args]) == 0
    return seen[-1]


def test_precedence_is_command_line_then_environment_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_config: list[Any]
) -> None:
    f = toml(
        tmp_path, 'collector = "10.0.0.1:7443"\nspool_max_bytes = 100000000\ncluster = "file"\n'
    )
    c = agent_run(["--config", str(f)], agent_config)
    assert (c.collector, c.spool_max_bytes, c.cluster) == ("10.0.0.1:7443", 100_000_000, "file")
    assert c.interval_s == 1.0  # default
    monkeypatch.setenv("FLOPWATCH_AGENT_SPOOL_MAX_BYTES", "200000000")
    monkeypatch.setenv("FLOPWATCH_AGENT_CLUSTER", "env")
    c = agent_run(["--config", str(f)], agent_config)
    assert (c.spool_max_bytes, c.cluster) == (200_000_000, "env")
    c = agent_run(["--config", str(f), "--spool-max-bytes", "300000000"], agent_config)
    assert (c.spool_max_bytes, c.cluster) == (300_000_000, "env")


def test_every_kind_of_option_reads_from_the_file(tmp_path: Path, agent_config: list[Any]) -> None:
    f = toml(
        tmp_path,
        """
collector = "c:1"
insecure = true
interval = 2
replay_speed = "max"
state_dir = "/srv/fw"
metrics_listen = "off"
control_socket = "/tmp/x.sock"
attribution = "slurm"
ack_timeout = 5.5
""",
    )
    c = agent_run(["--config", str(f)], agent_config)
    assert c.insecure is True
    assert c.interval_s == 2.0
    assert c.replay_speed is None
    assert c.state_dir == Path("/srv/fw")
    assert c.metrics_listen is None
    assert c.control_socket == Path("/tmp/x.sock")
    assert c.attribution == "slurm"
    assert c.ack_timeout_s == 5.5


def test_command_line_defaults_turn_the_local_endpoints_on(agent_config: list[Any]) -> None:
    c = agent_run(["--collector", "c:1"], agent_config)
    assert c.metrics_listen == "127.0.0.1:9465"
    assert c.control_socket == Path("/run/flopwatch/agent.sock")


def test_config_file_named_by_the_environment_and_switches_from_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_config: list[Any]
) -> None:
    monkeypatch.setenv("FLOPWATCH_AGENT_CONFIG", str(toml(tmp_path, 'collector = "c:9"\n')))
    monkeypatch.setenv("FLOPWATCH_AGENT_INSECURE", "yes")
    c = agent_run([], agent_config)
    assert (c.collector, c.insecure) == ("c:9", True)


def errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(args) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('collector = "c:1"\ncolector = "x"\n', "unknown key(s) 'colector'"),
        (
            'collector = "c:1"\nspool_max_bytes = "lots"\n',
            "key 'spool_max_bytes': 'lots' is not an integer",
        ),
        (
            'collector = "c:1"\nspool_max_bytes = 1.5\n',
            "key 'spool_max_bytes': expected an integer, got 1.5",
        ),
        ('collector = "c:1"\ninsecure = "yes"\n', "key 'insecure': expected true or false"),
        (
            'collector = "c:1"\ninterval = true\n',
            "key 'interval': expected a string or a number, got True",
        ),
        (
            'collector = "c:1"\ninterval = -1\n',
            "key 'interval': invalid value '-1': must be positive",
        ),
        ('collector = "c:1"\ncluster = 7\n', "key 'cluster': expected a string, got 7"),
        ('collector = "c:1"\n[agent]\nx = 1\n', "unknown key(s) 'agent'"),
        ("collector = \n", "is not valid TOML"),
    ],
)
def test_bad_files_are_clear_errors_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = toml(tmp_path, text)
    err = errors(["agent", "--config", str(f)], capsys)
    assert str(f) in err
    assert message in err


def test_bad_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOPWATCH_AGENT_INSECURE", "maybe")
    err = errors(["agent", "--collector", "c:1"], capsys)
    assert "environment variable FLOPWATCH_AGENT_INSECURE" in err
    monkeypatch.delenv("FLOPWATCH_AGENT_INSECURE")
    monkeypatch.setenv("FLOPWATCH_AGENT_COLECTOR", "c:1")
    err = errors(["agent", "--collector", "c:1"], capsys)
    assert "unknown environment variable FLOPWATCH_AGENT_COLECTOR" in err


def test_a_missing_required_option_says_every_way_to_give_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = errors(["agent"], capsys)
    assert "--collector is required" in err
    assert "FLOPWATCH_AGENT_COLLECTOR" in err and "collector = ..." in err


def test_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = errors(["agent", "--config", str(tmp_path / "nope.toml")], capsys)
    assert "cannot read config file" in err and "nope.toml" in err


def test_help_explains_keys_environment_and_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Precedence: command line, then environment, then file, then the default" in text
    assert "FLOPWATCH_AGENT_<KEY>" in text


def test_collector_reads_its_own_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Any] = []

    async def fake_run(config: Any, **kw: Any) -> None:
        seen.append(config)

    monkeypatch.setattr(flopwatch.collector.server, "run_collector", fake_run)
    f = tmp_path / "collector.toml"
    f.write_text('alert_basis = "estimate"\nthresholds = "1e20"\nmetrics_listen = "off"\n')
    monkeypatch.setenv("FLOPWATCH_COLLECTOR_LISTEN", "127.0.0.1:7999")
    assert main(["collector", "--config", str(f), "--insecure"]) == 0
    [c] = seen
    assert (c.alert_basis, c.thresholds, c.metrics_listen) == ("estimate", (10**20,), None)
    assert (c.listen, c.insecure) == ("127.0.0.1:7999", True)

    f.write_text('alert_basis = "median"\n')
    err = errors(["collector", "--config", str(f)], capsys)
    assert "key 'alert_basis': 'median' is not one of upper, estimate" in err
