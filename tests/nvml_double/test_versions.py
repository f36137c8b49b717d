"""The NVML double's pynvml-level and backend checks with each nvidia-ml-py release the project
must work with: the lowest pyproject allows, the newest 12.x and the newest 13.x. Each release is
installed once with pip into build/pynvml-venvs/<version> (pynvml is one module without
dependencies) and put first on the child's PYTHONPATH; flopwatch and its dependencies come from
this checkout's environment. 12.535.77, which the floor excludes, is installed too, to show the
defect that excludes it.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nvml_double.harness import (
    BUILD,
    TraceReference,
    check_whole_gpu,
    double_env,
    run_probe,
)
from tests.paths import REPO

pytestmark = pytest.mark.pynvml_versions

FLOOR = "12.535.108"
VERSIONS = (FLOOR, "12.575.51", "13.615.71")  # the floor, the newest 12.x, the newest 13.x
BROKEN = "12.535.77"  # reads process entries with a 32-byte struct; the driver writes 24 bytes
VENVS = BUILD / "pynvml-venvs"
PIP_TIMEOUT_S = 300

REF = TraceReference.load()
BUSY = REF.busiest()
TWO_PROCS = next(r["t0"] for r in REF.intervals if len(r["procs"]) == 2) + 0.5


def pynvml_dir(version: str) -> Path:
    """A folder holding nvidia-ml-py `version` (installed on first use, then cached)."""
    target = VENVS / version
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "pynvml.py").exists():
            return target
        tmp = VENVS / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
        cmd += ["--target", str(tmp), f"nvidia-ml-py=={version}"]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip could not fetch nvidia-ml-py=={version} in {PIP_TIMEOUT_S} s")
        if done.returncode != 0 or not (tmp / "pynvml.py").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"pip cannot install nvidia-ml-py=={version} (no network?): {tail[0]}")
        tmp.replace(target)
    return target


def probe(version: str, scenario: str, **params: object) -> object:
    switches = params.pop("switches", {})
    assert isinstance(switches, dict)
    env = double_env(**switches)
    return run_probe(scenario, env, pythonpath=[pynvml_dir(version)], **params)


def test_the_floor_is_what_pyproject_allows() -> None:
    deps = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"nvidia-ml-py>=([\d.]+)"', deps).group(1) == FLOOR  # type: ignore[union-attr]


@pytest.mark.parametrize("version", VERSIONS)
def test_pynvml_release_reads_the_double(version: str) -> None:
    ident = probe(version, "identity")
    assert isinstance(ident, dict)
    assert ident["pynvml"] == str(VENVS / version / "pynvml.py")  # this release, not the venv's
    assert ident["gpus"][0]["uuid"] == REF.meta["uuid"]
    assert probe(version, "layouts") == probe(VERSIONS[-1], "layouts")  # every struct agrees
    (rows,) = probe(version, "gpm", windows=[[BUSY, BUSY + 2]], ids=[7, 12])  # type: ignore[misc]
    assert [r[2] for r in rows] == pytest.approx(
        [REF.mean("hmma_tensor", BUSY, BUSY + 2), REF.mean("fp32", BUSY, BUSY + 2)]
    )
    procs = probe(version, "processes", t=TWO_PROCS)
    assert isinstance(procs, dict)
    assert sorted(p[0] for p in procs["nvmlDeviceGetComputeRunningProcesses"]) == REF.pids(
        TWO_PROCS
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_a_driver_without_v3_symbols_per_release(version: str) -> None:
    got = probe(version, "processes", t=TWO_PROCS, switches={"no_v3": True})
    assert isinstance(got, dict)
    raised = got["nvmlDeviceGetComputeRunningProcesses"]
    if version.startswith("12.535."):
        assert raised["exc"] == "NVMLError_FunctionNotFound" and raised["nvml_error"]
    else:  # from 12.575 the unversioned call is wrapped by throwOnVersionMismatch
        assert raised["exc"] == "NVMLLibraryMismatchError" and not raised["nvml_error"]


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_through_each_release(version: str) -> None:
    got = probe(version, "backend", start=BUSY - 1.0, intervals=3, trace_t0=REF.t0)
    assert isinstance(got, dict) and "raised" not in got
    for (reading,) in got["intervals"]:
        check_whole_gpu(reading, ref=REF)
    assert got["live_samples_after_close"] == 0


def test_the_excluded_release_misreads_every_process_after_the_first() -> None:
    sizes = probe(BROKEN, "layouts")
    assert isinstance(sizes, dict)
    assert sizes["nvmlProcessInfo_t"] == [24, 32]  # the driver's entry, pynvml's reading of it
    got = probe(BROKEN, "processes", t=TWO_PROCS)
    assert isinstance(got, dict)
    pids = [p[0] for p in got["nvmlDeviceGetComputeRunningProcesses"]]
    truth = [p["pid"] for p in REF.at(TWO_PROCS)["procs"]]  # type: ignore[index]
    assert pids[0] == truth[0] and pids[1] != truth[1]


def test_the_backend_drops_the_pids_the_excluded_release_misreads() -> None:
    # 267.4-268.4 s of the recording: two processes run and NVML's per-process samples all read
    # 0 % SM, so the backend splits the interval between the processes NVML lists. Under
    # 12.535.77 the second of those is garbage (a memory figure); it must never get a share.
    start = 1795426267.4
    got = probe(BROKEN, "backend", start=start, intervals=1, trace_t0=REF.t0)
    assert isinstance(got, dict) and "raised" not in got
    ((reading,),) = got["intervals"]
    truth = set(REF.pids(start)) | set(REF.pids(start + 1.0))
    pids = {pid for pid, _ in reading["processes"]}
    assert len(truth) == 2 and pids and pids <= truth
