"""Every settings file under deploy/ (systemd and Kubernetes) names only flags that
`flopwatch agent` or `flopwatch collector` accepts, with values they parse.

Keys are the long flags with '_' for '-' (the `--config FILE.toml` convention)."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from flopwatch.cli.main import build_parser
from tests.deploy.deploy_helpers import DEPLOY

TOML_FILES = sorted(DEPLOY.rglob("*.toml"))


def subcommand_parser(command: str) -> argparse.ArgumentParser:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser


def unknown_keys(command: str, settings: dict[str, object]) -> list[str]:
    flags = {s for a in subcommand_parser(command)._actions for s in a.option_strings}
    return sorted(k for k in settings if "--" + k.replace("_", "-") not in flags)


def as_argv(settings: dict[str, object]) -> list[str]:
    argv = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv.append(f"{flag}={value}")
    return argv


def test_there_are_settings_files_for_both_components() -> None:
    names = {p.name for p in TOML_FILES}
    assert {"agent.toml", "collector.toml"} <= names
    assert len(TOML_FILES) >= 4  # systemd, Kubernetes base (and overlays)


@pytest.mark.parametrize("path", TOML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_settings_name_flags_the_command_accepts(path: Path) -> None:
    command = path.stem
    settings = tomllib.loads(path.read_text())
    unknown = unknown_keys(command, settings)
    assert not unknown, f"{path.name}: `flopwatch {command}` has no flag for {unknown}"
    # The values parse as the flags' types (exits 2 otherwise).
    build_parser().parse_args([command, *as_argv(settings)])


def test_an_unknown_key_is_reported() -> None:
    assert unknown_keys("collector", {"listen": "0.0.0.0:7443", "listen_port": 7443}) == [
        "listen_port"
    ]
