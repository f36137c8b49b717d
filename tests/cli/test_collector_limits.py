"""`flopwatch collector`'s resource-limit options: flags, TOML keys and environment variables
reach CollectorConfig.server; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flopwatch.collector.server
from flopwatch.cli.main import main
from flopwatch.collector.config import MetricsSeries, PendingKeyLimits, ServerLimits
from flopwatch.tlog.tiles import MAX_ENTRY_BYTES


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    configs: list[Any] = []

    async def fake_run(config: Any, **kw: Any) -> None:
        configs.append(config)

    monkeypatch.setattr(flopwatch.collector.server, "run_collector", fake_run)
    return configs


def test_defaults_are_the_config_objects(seen: list[Any]) -> None:
    assert main(["collector", "--insecure", "--metrics-listen", "off"]) == 0
    assert seen[0].server == ServerLimits()
    assert seen[0].max_envelope_bytes == MAX_ENTRY_BYTES == 65_535
    assert seen[0].ingest_limits.max_envelope_bytes == MAX_ENTRY_BYTES


def test_the_envelope_limit_may_be_raised_only_without_tiles(
    seen: list[Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["collector", "--insecure", "--max-envelope-bytes", "1048576"]) == 0
    assert seen[0].ingest_limits.max_envelope_bytes == 1 << 20
    tiles = ["--tiles-dir", str(tmp_path / "tiles")]
    assert main(["collector", "--insecure", *tiles, "--max-envelope-bytes", "70000"]) != 0
    err = capsys.readouterr().err
    assert "--max-envelope-bytes must be 65535 to 65535 with the log's tiles on" in err
    assert main(["collector", "--insecure", "--max-envelope-bytes", "60000"]) != 0
    assert "--max-envelope-bytes must be 65535 to 1048576, got 60000" in capsys.readouterr().err
    assert len(seen) == 1


def test_flags_file_and_environment_set_limits(
    seen: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "collector.toml"
    f.write_text('max_streams_per_address = 4\nstream_idle_timeout = "2m"\n')
    monkeypatch.setenv("FLOPWATCH_COLLECTOR_MAX_INFLIGHT_BYTES", "1048576")
    argv = ["collector", "--insecure", "--config", str(f), "--handshake-timeout", "3s"]
    assert main(argv) == 0
    s = seen[0].server
    assert (s.max_streams_per_address, s.stream_idle_timeout_s) == (4, 120.0)
    assert (s.max_inflight_bytes, s.handshake_timeout_s) == (1 << 20, 3.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-connections", "0"], "--max-connections must be positive"),
        (["--max-inflight-bytes", "-1"], "--max-inflight-bytes must be positive"),
        (["--keepalive-time", "0s"], "expected a positive duration"),
    ],
)
def test_bad_limits_are_refused(
    seen: list[Any], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["collector", "--insecure", *argv]) != 0
    assert message in capsys.readouterr().err
    assert seen == []


def test_zero_turns_a_stream_cap_off(seen: list[Any]) -> None:
    assert main(["collector", "--insecure", "--max-streams-per-address", "0"]) == 0
    assert seen[0].server.max_streams_per_address == 0


def test_pending_key_limits_from_flags_file_and_environment(
    seen: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["collector", "--insecure"]) == 0
    assert seen[0].pending_keys == PendingKeyLimits()
    f = tmp_path / "collector.toml"
    f.write_text("max_pending_keys = 50\nmax_pending_keys_per_node = 2\n")
    monkeypatch.setenv("FLOPWATCH_COLLECTOR_MAX_NEW_PENDING_KEYS_PER_MINUTE", "6")
    argv = ["collector", "--insecure", "--config", str(f), "--max-pending-keys-per-node", "1"]
    assert main(argv) == 0
    assert seen[1].pending_keys == PendingKeyLimits(
        max_per_node=1, max_total=50, max_new_per_minute=6
    )
    assert main(["collector", "--insecure", "--max-pending-keys", "0"]) == 0  # list none
    assert seen[2].pending_keys.max_total == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-pending-keys", "-1"], "--max-pending-keys must be from 0 to 2147483647"),
        (
            ["--max-new-pending-keys-per-minute", "-3"],
            "--max-new-pending-keys-per-minute must be from 0 to 2147483647, got -3",
        ),
    ],
)
def test_bad_pending_key_limits_are_refused(
    seen: list[Any], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["collector", "--insecure", *argv]) != 0
    assert message in capsys.readouterr().err
    assert seen == []


def test_a_pending_key_limit_of_the_wrong_type_in_the_file_names_the_key(
    seen: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "collector.toml"
    f.write_text('max_pending_keys = "lots"\n')
    assert main(["collector", "--insecure", "--config", str(f)]) == 2
    assert "max_pending_keys" in capsys.readouterr().err
    assert seen == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-streams", "2147483648"], "--max-streams must be at most 2147483647"),
        (["--max-inflight-bytes", str(2**53 + 1)], "--max-inflight-bytes must be at most"),
        (["--silent-after", "9" * 400 + "d"], "is longer than 100 years"),
        (["--keepalive-time", "36501d"], "is longer than 100 years"),
    ],
)
def test_values_past_what_the_collector_can_hold_are_refused(
    seen: list[Any], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["collector", "--insecure", *argv]) == 2
    assert message in capsys.readouterr().err
    assert seen == []


def test_metrics_series_bounds_from_flags_and_toml(seen: list[Any], tmp_path: Path) -> None:
    assert main(["collector", "--insecure"]) == 0
    assert seen[0].metrics_series == MetricsSeries(recent_s=86_400.0, max_series=10_000)
    args = ["collector", "--insecure", "--metrics-recent", "2h", "--metrics-max-series", "50"]
    assert main(args) == 0
    assert seen[1].metrics_series == MetricsSeries(recent_s=7200.0, max_series=50)
    toml = tmp_path / "collector.toml"
    toml.write_text("insecure = true\nmetrics_recent = 600\nmetrics_max_series = 7\n")
    assert main(["collector", "--config", str(toml)]) == 0
    assert seen[2].metrics_series == MetricsSeries(recent_s=600.0, max_series=7)


@pytest.mark.parametrize(
    "flag", [("--metrics-max-series", "0"), ("--metrics-max-series", "1000001")]
)
def test_metrics_series_bounds_out_of_range_are_clear_errors(
    seen: list[Any], capsys: pytest.CaptureFixture[str], flag: tuple[str, str]
) -> None:
    assert main(["collector", "--insecure", *flag]) != 0
    assert "--metrics-max-series must be from 1 to 1000000" in capsys.readouterr().err
    assert seen == []
