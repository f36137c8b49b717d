"""`flopwatch collector`'s resource-limit options: flags, TOML keys and environment variables
reach CollectorConfig.server; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flopwatch.collector.server
from flopwatch.cli.main import main
from flopwatch.collector.config import ServerLimits
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
