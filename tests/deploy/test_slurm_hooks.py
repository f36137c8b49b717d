"""deploy/slurm: the prolog and epilog run for real against a fake `flopwatch` first on PATH that
records its argv. They pass exactly the arguments the job allows, treat job-controlled text as
data, and exit 0 whatever happens to flopwatch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import DEPLOY, tool

SLURM = DEPLOY / "slurm"
PROLOG, EPILOG = SLURM / "prolog.sh", SLURM / "epilog.sh"
LIB = SLURM / "flopwatch-slurm-lib.sh"

FAKE_FLOPWATCH = f"""#!{sys.executable}
# Stands in for flopwatch: appends its argv (JSON, one line a call) to $FAKE_LOG, then sleeps
# $FAKE_SLEEP seconds and exits with $FAKE_EXIT.
import json, os, sys, time
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@dataclass
class Run:
    returncode: int
    calls: list[list[str]]
    log: str
    seconds: float


class Hooks:
    """Runs a hook with a clean environment, the fake flopwatch first on PATH."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fake = self.bin / "flopwatch"
        fake.write_text(FAKE_FLOPWATCH)
        fake.chmod(0o755)
        self.calls_file = tmp_path / "calls.jsonl"

    def run(self, hook: Path, *, on_path: bool = True, **env: str) -> Run:
        self.calls_file.unlink(missing_ok=True)
        path = f"{self.bin}:/usr/bin:/bin" if on_path else "/usr/bin:/bin"
        started = time.monotonic()
        result = subprocess.run(
            [str(hook)],
            env={"PATH": path, "FAKE_LOG": str(self.calls_file), **env},
            cwd=self.tmp,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        calls = []
        if self.calls_file.exists():
            calls = [json.loads(line) for line in self.calls_file.read_text().splitlines()]
        return Run(result.returncode, calls, result.stderr, time.monotonic() - started)


@pytest.fixture
def hooks(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path)


def test_scripts_pass_shellcheck() -> None:
    result = subprocess.run(
        [tool("shellcheck"), "-x", "--severity=style", str(PROLOG), str(EPILOG), str(LIB)],
        check=False,
        capture_output=True,
        text=True,
        cwd=SLURM,
    )
    assert result.returncode == 0, result.stdout


def test_prolog_registers_the_job_with_its_gpus_and_declared_precision(hooks: Hooks) -> None:
    run = hooks.run(
        PROLOG,
        SLURM_JOB_ID="81234",
        SLURM_JOB_GPUS="0,1",
        CUDA_VISIBLE_DEVICES="0,1",
        SLURM_JOB_COMMENT="llama-70b pretrain flopwatch:precision=fp8",
    )
    assert run.returncode == 0
    assert run.calls == [
        ["job", "start", "--source=slurm", "--job=81234", "--gpus=0,1", "--precision=fp8"]
    ]
    assert "ok: flopwatch job start --job=81234" in run.log


def test_prolog_takes_gpu_uuids_from_cuda_visible_devices(hooks: Hooks) -> None:
    uuids = "GPU-5c1b7a3e-0f6d-4e1a-9a9b-2f1e2d3c4b5a,MIG-0f6d4e1a-9a9b-2f1e-2d3c-4b5a5c1b7a3e"
    run = hooks.run(PROLOG, SLURM_JOB_ID="7", CUDA_VISIBLE_DEVICES=uuids)
    assert run.calls == [["job", "start", "--source=slurm", "--job=7", f"--gpus={uuids}"]]


def test_prolog_precision_from_extra_and_case_insensitive(hooks: Hooks) -> None:
    run = hooks.run(PROLOG, SLURM_JOB_ID="7", SLURM_JOB_EXTRA="flopwatch:precision=BF16")
    assert run.calls[0][-1] == "--precision=bf16"


@pytest.mark.parametrize(
    "gpus", [{}, {"SLURM_JOB_GPUS": ""}, {"CUDA_VISIBLE_DEVICES": "NoDevFiles"}]
)
def test_prolog_without_gpus_registers_the_job_without_gpus(
    hooks: Hooks, gpus: dict[str, str]
) -> None:
    run = hooks.run(PROLOG, SLURM_JOB_ID="81234", **gpus)
    assert run.returncode == 0
    assert run.calls == [["job", "start", "--source=slurm", "--job=81234"]]
    assert "registering without --gpus" in run.log


@pytest.mark.parametrize(
    ("comment", "precision"),
    [
        ("flopwatch:precision=fp8; touch {tmp}/pwned", "fp8"),
        ("$(touch {tmp}/pwned) flopwatch:precision=bf16", "bf16"),
        ("`touch {tmp}/pwned`\nflopwatch:precision=fp16", "fp16"),
        ("flopwatch:precision=fp8$(touch {tmp}/pwned)", None),
        ("flopwatch:precision=fp8' --socket=/tmp/evil '", None),
        ("flopwatch:precision=--socket=/tmp/evil", None),
        ("flopwatch:precision=fp64x", None),
        ('"; touch {tmp}/pwned; echo "', None),
        ("x" * 100_000 + " flopwatch:precision=tf32", "tf32"),
    ],
    ids=[
        "semicolon",
        "command-substitution",
        "backticks-newline",
        "substitution-glued-to-value",
        "quote-and-option",
        "option-as-value",
        "unknown-precision",
        "quote-breakout",
        "100k-comment",
    ],
)
def test_prolog_treats_a_hostile_comment_as_data(
    hooks: Hooks, comment: str, precision: str | None
) -> None:
    run = hooks.run(
        PROLOG,
        SLURM_JOB_ID="81234",
        SLURM_JOB_GPUS="0",
        SLURM_JOB_COMMENT=comment.replace("{tmp}", str(hooks.tmp)),
    )
    assert run.returncode == 0
    assert not (hooks.tmp / "pwned").exists()
    expected = ["job", "start", "--source=slurm", "--job=81234", "--gpus=0"]
    if precision:
        expected.append(f"--precision={precision}")
    assert run.calls == [expected]


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_JOB_ID": "81234", "SLURM_JOB_GPUS": "0,1 --socket=/tmp/evil"},
        {"SLURM_JOB_ID": "81234", "SLURM_JOB_GPUS": "-1"},
        {"SLURM_JOB_ID": "81234", "CUDA_VISIBLE_DEVICES": "$(touch {tmp}/pwned)"},
    ],
    ids=["option-in-gpu-list", "leading-dash", "substitution"],
)
def test_prolog_drops_a_malformed_gpu_list(hooks: Hooks, env: dict[str, str]) -> None:
    run = hooks.run(PROLOG, **{k: v.replace("{tmp}", str(hooks.tmp)) for k, v in env.items()})
    assert run.returncode == 0
    assert run.calls == [["job", "start", "--source=slurm", "--job=81234"]]
    assert not (hooks.tmp / "pwned").exists()


@pytest.mark.parametrize("hook", [PROLOG, EPILOG], ids=["prolog", "epilog"])
@pytest.mark.parametrize("job_id", [None, "", "81234; touch pwned", "--socket=/tmp/evil", "12a"])
def test_hooks_refuse_a_malformed_job_id(hooks: Hooks, hook: Path, job_id: str | None) -> None:
    run = hooks.run(hook, **({} if job_id is None else {"SLURM_JOB_ID": job_id}))
    assert run.returncode == 0
    assert run.calls == []
    assert "not a job id" in run.log
    assert not (hooks.tmp / "pwned").exists()


@pytest.mark.parametrize("hook", [PROLOG, EPILOG], ids=["prolog", "epilog"])
def test_hooks_exit_0_when_flopwatch_fails(hooks: Hooks, hook: Path) -> None:
    run = hooks.run(hook, SLURM_JOB_ID="81234", FAKE_EXIT="3")
    assert run.returncode == 0
    assert len(run.calls) == 1
    assert "failed with exit code 3 (agent down?); job goes on" in run.log


@pytest.mark.parametrize("hook", [PROLOG, EPILOG], ids=["prolog", "epilog"])
def test_hooks_exit_0_when_flopwatch_hangs(hooks: Hooks, hook: Path) -> None:
    run = hooks.run(hook, SLURM_JOB_ID="81234", FAKE_SLEEP="120", FLOPWATCH_SLURM_TIMEOUT="1")
    assert run.returncode == 0
    assert "timed out after 1s" in run.log
    assert run.seconds < 30  # bounded by the timeout (1 s, then SIGKILL 2 s later), not by 120 s


@pytest.mark.parametrize("hook", [PROLOG, EPILOG], ids=["prolog", "epilog"])
def test_hooks_exit_0_when_flopwatch_is_not_installed(hooks: Hooks, hook: Path) -> None:
    run = hooks.run(hook, on_path=False, SLURM_JOB_ID="81234")
    assert run.returncode == 0
    assert run.calls == []
    assert "flopwatch not found" in run.log


def test_hook_without_its_library_still_exits_0(hooks: Hooks) -> None:
    lonely = hooks.tmp / "prolog.sh"
    shutil.copy(PROLOG, lonely)
    run = hooks.run(lonely, SLURM_JOB_ID="81234")
    assert run.returncode == 0
    assert run.calls == []
    assert "flopwatch-slurm-lib.sh missing" in run.log


def test_epilog_ends_the_job(hooks: Hooks) -> None:
    run = hooks.run(EPILOG, SLURM_JOB_ID="81234", SLURM_JOB_GPUS="0,1")
    assert run.returncode == 0
    assert run.calls == [["job", "end", "--source=slurm", "--job=81234"]]


@pytest.mark.parametrize("hook", [PROLOG, EPILOG], ids=["prolog", "epilog"])
def test_hooks_pass_the_configured_socket(hooks: Hooks, hook: Path) -> None:
    run = hooks.run(
        hook, SLURM_JOB_ID="5", FLOPWATCH_AGENT_CONTROL_SOCKET="/run/flopwatch/other.sock"
    )
    [call] = run.calls
    assert call[-1] == "--socket=/run/flopwatch/other.sock"
