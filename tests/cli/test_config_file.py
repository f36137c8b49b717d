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


def collector_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, *args: str) -> Any:
    seen: list[Any] = []

    async def fake_run(config: Any, **kw: Any) -> None:
        seen.append(config)

    monkeypatch.setattr(flopwatch.collector.server, "run_collector", fake_run)
    f = tmp_path / "collector.toml"
    f.write_text(text)
    assert main(["collector", "--config", str(f), "--insecure", *args]) == 0
    return seen[-1]


def test_toml_numbers_and_lists_where_the_setting_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_config: list[Any]
) -> None:
    c = collector_config(
        tmp_path,
        monkeypatch,
        "verify_workers = 2\nthresholds = [1e23, 1e24, 100000000000000000000000]\n"
        "silent_after = 90\ntree_head_interval = 2.5\nmetrics_listen = 'off'\n",
    )
    assert c.verify_workers == 2
    assert c.thresholds == (10**23, 10**24)  # 1e23 is exactly 10**23, not the float near it
    assert (c.silent_after_s, c.tree_head_interval_s) == (90.0, 2.5)
    c = collector_config(tmp_path, monkeypatch, "thresholds = 1e25\nmetrics_listen = 'off'\n")
    assert c.thresholds == (10**25,)
    # strings are read as before
    c = collector_config(tmp_path, monkeypatch, 'verify_workers = "3"\nthresholds = "1e20,1e21"\n')
    assert (c.verify_workers, c.thresholds) == (3, (10**20, 10**21))
    a = agent_run(
        ["--config", str(toml(tmp_path, 'collector = "c:1"\nattribution = ["slurm"]\n'))],
        agent_config,
    )
    assert a.attribution == "slurm"


def test_collector_thresholds_by_scope_from_toml_and_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = collector_config(tmp_path, monkeypatch, "metrics_listen = 'off'\n")
    default = [(r.name, r.threshold) for r in c.run_thresholds]
    assert default == [
        ("eu-ai-act", 0),  # the derived-run rule: a third of the parent's cumulative compute
        ("eu-ai-act", 10**23),
        ("eu-ai-act", 10**25),
        ("us-ca-sb53", 10**26),
    ]
    assert c.account_thresholds == c.run_thresholds and c.forecast_days == 14.0
    assert c.scoped_policy.forecast_min_span_s == 3600.0
    c = collector_config(
        tmp_path,
        monkeypatch,
        "run_thresholds = ['us-ca-sb53', 5e24]\naccount_thresholds = 'none'\n"
        "forecast_days = 7\nforecast_min_span_s = 60\nmetrics_listen = 'off'\n",
    )
    assert [(r.name, r.threshold) for r in c.run_thresholds] == [
        ("custom", 5 * 10**24),
        ("us-ca-sb53", 10**26),
    ]
    assert (c.account_thresholds, c.scoped_policy.forecast_days) == ((), 7.0)
    assert c.scoped_policy.forecast_min_span_s == 60.0
    c = collector_config(
        tmp_path, monkeypatch, "metrics_listen = 'off'\n", "--run-thresholds", "eu-ai-act"
    )
    assert [r.threshold for r in c.run_thresholds] == [0, 10**23, 10**25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run_thresholds = ['eu-ai-act', 'gdpr']\n", "threshold 'gdpr' is neither a preset"),
        ("forecast_days = -1\n", "forecast days must be 0 to 3660"),
        ("forecast_min_span_s = -1\n", "the forecast's least span must be 0 to 365 days"),
        (
            "verify_workers = 2.5\n",
            "key 'verify_workers': expected a string or an integer, got 2.5",
        ),
        ("verify_workers = 99\n", "--verify-workers takes 'auto' or 0 to 64"),
        ("verify_workers = true\n", "key 'verify_workers': expected a string or an integer"),
        ("thresholds = []\n", "key 'thresholds': expected a non-empty list"),
        ("thresholds = [1e23, true]\n", "key 'thresholds': expected a non-empty list"),
        ("thresholds = [[1]]\n", "key 'thresholds': expected a non-empty list"),
        ("thresholds = [-1]\n", "threshold '-1' must be a positive whole number"),
        ("listen = ['a', 'b']\n", "key 'listen': expected a string, got ['a', 'b']"),
        ("silent_after = -5\n", "expected a positive duration"),
    ],
)
def test_wrong_toml_types_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = tmp_path / "collector.toml"
    f.write_text(text)
    err = errors(["collector", "--config", str(f), "--insecure"], capsys)
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe", "is not TOML text (byte 9 is not UTF-8)"),
        (b"\x00\x01\x02binary", "is not valid TOML"),
        (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1048576 bytes"),
    ],
)
def test_a_binary_or_huge_config_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    f = tmp_path / "flopwatch"
    f.write_bytes(data)
    for cmd in (["agent"], ["collector", "--insecure"]):
        err = errors([*cmd, "--config", str(f)], capsys)
        assert message in err and str(f) in err
        assert "Traceback" not in err


def test_a_device_as_config_file_is_read_no_further_than_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = errors(["agent", "--config", "/dev/zero"], capsys)
    assert "larger than 1048576 bytes" in err


KUBERNETES_SERVICE_LINKS = {
    # Service flopwatch-collector, port grpc 7443/TCP
    "FLOPWATCH_COLLECTOR_SERVICE_HOST": "10.0.0.1",
    "FLOPWATCH_COLLECTOR_SERVICE_PORT": "7443",
    "FLOPWATCH_COLLECTOR_SERVICE_PORT_GRPC": "7443",
    "FLOPWATCH_COLLECTOR_PORT": "tcp://10.0.0.1:7443",
    "FLOPWATCH_COLLECTOR_PORT_7443_TCP": "tcp://10.0.0.1:7443",
    "FLOPWATCH_COLLECTOR_PORT_7443_TCP_PROTO": "tcp",
    "FLOPWATCH_COLLECTOR_PORT_7443_TCP_PORT": "7443",
    "FLOPWATCH_COLLECTOR_PORT_7443_TCP_ADDR": "10.0.0.1",
    # Service flopwatch-collector-metrics (IPv6 cluster), and flopwatch-agent-metrics
    "FLOPWATCH_COLLECTOR_METRICS_SERVICE_HOST": "fd00::1",
    "FLOPWATCH_COLLECTOR_METRICS_PORT": "tcp://[fd00::1]:9464",
    "FLOPWATCH_COLLECTOR_METRICS_PORT_9464_TCP_ADDR": "fd00::1",
    "FLOPWATCH_AGENT_METRICS_SERVICE_HOST": "10.0.0.2",
    "FLOPWATCH_AGENT_METRICS_SERVICE_PORT_METRICS": "9465",
    "FLOPWATCH_AGENT_METRICS_PORT": "tcp://10.0.0.2:9465",
    "FLOPWATCH_AGENT_METRICS_PORT_9465_TCP": "tcp://10.0.0.2:9465",
    "FLOPWATCH_AGENT_METRICS_PORT_9465_TCP_PROTO": "tcp",
    "FLOPWATCH_AGENT_METRICS_PORT_9465_TCP_PORT": "9465",
    "FLOPWATCH_AGENT_METRICS_PORT_9465_TCP_ADDR": "10.0.0.2",
}


def test_kubernetes_service_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_config: list[Any]
) -> None:
    for name, value in KUBERNETES_SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)
    a = agent_run(["--collector", "c:1"], agent_config)
    assert a.collector == "c:1"
    c = collector_config(tmp_path, monkeypatch, "metrics_listen = 'off'\n")
    assert c.listen == "127.0.0.1:7443"  # the defaults: none of them was taken for a setting


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLOPWATCH_AGENT_COLECTOR", "10.0.0.1:7443"),  # a typo stays an error
        ("FLOPWATCH_AGENT_METRICS_PORT", "9465"),  # a setting guessed, not a Service's variable
        ("FLOPWATCH_AGENT_SERVICE_HOST", "two words"),
        ("FLOPWATCH_AGENT_X_PORT_7443_TCP_PROTO", "http"),
    ],
)
def test_a_mistyped_setting_that_looks_like_a_service_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    err = errors(["agent", "--collector", "c:1"], capsys)
    assert f"unknown environment variable {name}" in err


def test_runs_and_accounts_from_the_file_a_table_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_config: list[Any]
) -> None:
    f = toml(
        tmp_path,
        """
collector = "c:1"
slurm_run_from = "comment"
slurm_run_variable = "MY_RUN"
scontrol = "/opt/slurm/bin/scontrol"
scontrol_timeout = 1
default_account = "lab"

[account_map]
physics = "acme"
"chem lab" = "acme"
""",
    )
    c = agent_run(["--config", str(f)], agent_config)
    assert (c.slurm_run_from, c.slurm_run_variable, c.slurm_class_variable) == (
        "comment",
        "MY_RUN",
        "FLOPWATCH_RUN_CLASS",
    )
    assert (c.scontrol, c.scontrol_timeout_s) == ("/opt/slurm/bin/scontrol", 1.0)
    assert c.account_map == {"physics": "acme", "chem lab": "acme"}
    assert c.default_account == "lab"
    monkeypatch.setenv("FLOPWATCH_AGENT_ACCOUNT_MAP", "bio=beta")
    assert agent_run(["--config", str(f)], agent_config).account_map == {"bio": "beta"}
    monkeypatch.delenv("FLOPWATCH_AGENT_ACCOUNT_MAP")
    assert agent_run(["--collector", "c:1"], agent_config).account_map == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[account_map]\nphysics = 5\n", "key 'account_map': expected a table of strings"),
        ('[account_map]\nphysics = ""\n', "--account-map account '' is empty"),
        ('default_account = "a\\u0000"\n', "--default-account"),
        ('slurm_run_variable = "MY-RUN"\n', "is not an environment variable name"),
    ],
)
def test_bad_run_and_account_settings_stop_the_agent_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = toml(tmp_path, 'collector = "c:1"\n' + text)
    err = errors(["agent", "--config", str(f)], capsys)
    assert message in err
    assert "Traceback" not in err


def test_kubernetes_api_settings_from_the_file(tmp_path: Path, agent_config: list[Any]) -> None:
    f = toml(
        tmp_path,
        """
collector = "c:1"
k8s_api = "https://10.96.0.1:443"
k8s_node = "gpu-node-7"
k8s_token_file = "/run/token"
k8s_ca_file = "/run/ca.crt"
k8s_run_label = "example.com/run"
k8s_run_annotation = ""
k8s_class_key = "example.com/class"
k8s_account_label = "example.com/tenant"
""",
    )
    c = agent_run(["--config", str(f)], agent_config)
    assert (c.k8s_api, c.k8s_node) == ("https://10.96.0.1:443", "gpu-node-7")
    assert (c.k8s_token_file, c.k8s_ca_file) == (Path("/run/token"), Path("/run/ca.crt"))
    assert (c.k8s_run_label, c.k8s_run_annotation) == ("example.com/run", "")
    assert (c.k8s_class_key, c.k8s_account_label) == ("example.com/class", "example.com/tenant")
    plain = agent_run(["--collector", "c:1"], agent_config)
    assert (plain.k8s_api, plain.k8s_run_label, plain.k8s_account_label) == (
        "auto",
        "flopwatch.dev/run",
        "flopwatch.dev/account",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('k8s_api = "10.96.0.1:443"\n', "use an http(s)://HOST:PORT URL"),
        ('k8s_run_label = "two words"\n', "--k8s-run-label 'two words' is not a label"),
    ],
)
def test_bad_kubernetes_settings_stop_the_agent_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = toml(tmp_path, 'collector = "c:1"\n' + text)
    err = errors(["agent", "--config", str(f)], capsys)
    assert message in err
    assert "Traceback" not in err
