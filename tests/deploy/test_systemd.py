"""deploy/systemd: the units pass `systemd-analyze verify` without a warning, keep their hardening,
and start flopwatch with flags its command line accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flopwatch.cli.main import build_parser
from tests.deploy.deploy_helpers import DEPLOY, tool

SYSTEMD = DEPLOY / "systemd"
UNITS = ["flopwatch-agent.service", "flopwatch-collector.service"]
INSTALLED_BINARY = "/opt/flopwatch/bin/flopwatch"
# systemd-analyze's weighted exposure score, 0 (locked down) to 10 (unprotected).
MAX_EXPOSURE = 2.5


def service_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] section: key -> every value given, backslash continuations joined."""
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", "--generators=no", *map(str, units)],
        check=False,
        capture_output=True,
        text=True,
    )


def with_real_binary(unit: Path, directory: Path) -> Path:
    """A copy whose ExecStart names this environment's flopwatch (verify checks it exists)."""
    copy = directory / unit.name
    binary = Path(sys.executable).parent / "flopwatch"
    copy.write_text(unit.read_text().replace(INSTALLED_BINARY, str(binary)))
    return copy


def test_units_verify_without_any_warning(tmp_path: Path) -> None:
    result = verify([with_real_binary(SYSTEMD / u, tmp_path) for u in UNITS])
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown or misspelt settings and only prints them: no output at all.
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_misspelt_setting(tmp_path: Path) -> None:
    unit = with_real_binary(SYSTEMD / UNITS[0], tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = verify([unit])
    assert "NoNewPrivilege" in result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_runs_hardened_as_the_dedicated_user(unit: str) -> None:
    s = service_settings(SYSTEMD / unit)
    one = {k: v[-1] for k, v in s.items()}
    assert (one["User"], one["Group"]) == ("flopwatch", "flopwatch")
    assert one["NoNewPrivileges"] == "yes"
    assert one["ProtectSystem"] == "strict"  # everything read-only but the state directory
    assert "/etc/flopwatch" in one["ReadOnlyPaths"]
    assert one["ProtectHome"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["StateDirectory"].startswith("flopwatch-") and one["StateDirectoryMode"] == "0700"
    assert one["UMask"] == "0077"
    # TLS keys come as systemd credentials, readable by the service only.
    assert any(
        v.endswith(".key:/etc/flopwatch/tls/" + v.split(":")[0]) for v in s["LoadCredential"]
    )


def test_only_the_agent_reaches_devices_and_only_nvidia_ones() -> None:
    agent = service_settings(SYSTEMD / "flopwatch-agent.service")
    collector = service_settings(SYSTEMD / "flopwatch-collector.service")
    assert collector["PrivateDevices"] == ["yes"]
    assert agent["DevicePolicy"] == ["closed"]
    assert all("nvidia" in d for d in agent["DeviceAllow"])
    # The Slurm prolog (root) reaches the control socket; other users do not.
    assert agent["RuntimeDirectory"] == ["flopwatch"] and agent["RuntimeDirectoryMode"] == ["0750"]


@pytest.mark.parametrize("unit", UNITS)
def test_exposure_score_is_low(unit: str) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(SYSTEMD / unit)],
        check=False,
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_sysusers_creates_the_dedicated_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSTEMD / "flopwatch.sysusers.conf")],
        check=True,
        capture_output=True,
    )
    [user] = [
        ln
        for ln in (tmp_path / "etc/passwd").read_text().splitlines()
        if ln.startswith("flopwatch:")
    ]
    assert user.endswith(":/usr/sbin/nologin")
    groups = (tmp_path / "etc/group").read_text()
    assert re.search(r"^video:x:\d+:flopwatch$", groups, re.MULTILINE)


@pytest.mark.parametrize(("unit", "command"), [(UNITS[0], "agent"), (UNITS[1], "collector")])
def test_exec_start_uses_flags_flopwatch_accepts(unit: str, command: str) -> None:
    [exec_start] = service_settings(SYSTEMD / unit)["ExecStart"]
    argv = shlex.split(exec_start.replace("%d", "/run/credentials/" + unit))
    assert argv[0] == INSTALLED_BINARY
    args = build_parser().parse_args(argv[1:])  # exits 2 on an unknown flag
    assert args.command == command
    assert str(args.config).endswith(f"/etc/flopwatch/{command}.toml")
    assert str(args.tls_key).startswith("/run/credentials/")
