"""Slurm attribution from a fake /proc: cgroup paths, SLURM_JOB_ID, precision, pid reuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flopwatch.agent.attribution.procfs import ProcFs
from flopwatch.agent.attribution.slurm import SlurmSource, job_from_cgroups
from flopwatch.attribution import Claim, attribute
from flopwatch.model import Precision
from flopwatch.model.flops import PPM
from tests.agent.fake_proc import add_process, remove_process

V1 = "memory:/slurm/uid_1000/job_123/step_0/task_0"
V2 = ":/system.slice/slurmstepd.scope/job_456/step_batch/user/task_0"
S = 10**9


@pytest.mark.parametrize(
    ("paths", "job"),
    [
        (["cpuset:/slurm/uid_1000/job_123/step_0/task_0"], "123"),
        (["/system.slice/slurmstepd.scope/job_456/step_batch/user/task_0"], "456"),
        (["/slurm_node07/uid_0/job_789/step_extern"], "789"),
        (["/slurm/uid_1000/job_77"], "77"),
        (["/user.slice/user-1000.slice/session-3.scope"], None),
        (["/kubepods/besteffort/pod0a/job_5/x"], None),  # not under a slurm hierarchy
        (["/slurm/uid_1000/job_12a/step_0"], None),
    ],
)
def test_job_from_cgroup_paths(paths: list[str], job: str | None) -> None:
    assert job_from_cgroups(paths) == job


def test_cgroup_v1_and_v2_processes_become_process_claims(tmp_path: Path) -> None:
    add_process(tmp_path, 10, cgroups=["cpu:/", V1], environ={"HOME": "/root"})
    add_process(tmp_path, 11, cgroups=[V2], environ={})
    add_process(tmp_path, 12, cgroups=["::/user.slice"], environ={"PATH": "/bin"})
    source = SlurmSource("cluster-a", ProcFs(tmp_path))
    windows = source.windows({10, 11, 12, 99}, now_ns=5 * S)
    assert [(w.job_id, w.pid, w.claim, w.source) for w in windows] == [
        ("slurm:cluster-a/123", 10, Claim.PROCESS, "slurm"),
        ("slurm:cluster-a/456", 11, Claim.PROCESS, "slurm"),
    ]
    shares = attribute(S, 2 * S, [(10, 0.5), (11, 0.25), (12, 0.25)], windows)
    assert {a.job_id: a.share_ppm for a in shares} == {
        "slurm:cluster-a/123": 500_000,
        "slurm:cluster-a/456": 250_000,
        "unattributed": 250_000,
    }


def test_environment_names_the_job_where_there_is_no_slurm_cgroup(tmp_path: Path) -> None:
    env = {"SLURM_JOB_ID": "9001", "FLOPWATCH_PRECISION": "fp8"}
    add_process(tmp_path, 20, cgroups=["::/user.slice"], environ=env)
    [w] = SlurmSource("c", ProcFs(tmp_path)).windows({20}, now_ns=S)
    assert (w.job_id, w.precision) == ("slurm:c/9001", Precision.FP8)


def test_the_cgroup_beats_a_forged_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_process(tmp_path, 21, cgroups=[V1], environ={"SLURM_JOB_ID": "999"})
    with caplog.at_level(logging.WARNING):
        [w] = SlurmSource("c", ProcFs(tmp_path)).windows({21}, now_ns=S)
    assert w.job_id == "slurm:c/123"
    assert "SLURM_JOB_ID=999" in caplog.text and "using the cgroup" in caplog.text


def test_bad_declared_precision_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_process(tmp_path, 22, cgroups=[V1], environ={"FLOPWATCH_PRECISION": "fp4"})
    with caplog.at_level(logging.WARNING):
        [w] = SlurmSource("c", ProcFs(tmp_path)).windows({22}, now_ns=S)
    assert w.precision is Precision.UNSPECIFIED
    assert "unknown precision 'fp4'" in caplog.text


def test_non_numeric_slurm_job_id_in_environment_is_not_trusted(tmp_path: Path) -> None:
    add_process(tmp_path, 23, environ={"SLURM_JOB_ID": "../../etc"}, cgroups=[])
    assert SlurmSource("c", ProcFs(tmp_path)).windows({23}, now_ns=S) == []


def test_a_process_that_exits_keeps_its_job_and_a_reused_pid_is_looked_up_again(
    tmp_path: Path,
) -> None:
    source = SlurmSource("c", ProcFs(tmp_path))
    add_process(tmp_path, 30, cgroups=[V1], start_ticks=500)
    assert [w.job_id for w in source.windows({30}, S)] == ["slurm:c/123"]
    remove_process(tmp_path, 30)  # exited during the next interval: its work is still job 123's
    assert [w.job_id for w in source.windows({30}, 2 * S)] == ["slurm:c/123"]
    add_process(tmp_path, 30, cgroups=[V2], start_ticks=900)  # the pid, reused by job 456
    assert [w.job_id for w in source.windows({30}, 3 * S)] == ["slurm:c/456"]


def test_a_process_first_seen_after_it_exited_is_unknown(tmp_path: Path) -> None:
    assert SlurmSource("c", ProcFs(tmp_path)).windows({31}, S) == []


def test_stat_with_odd_command_name_parses(tmp_path: Path) -> None:
    add_process(tmp_path, 40, cgroups=[V1], comm="a) b (c", start_ticks=4242)
    assert ProcFs(tmp_path).start_ticks(40) == 4242


def test_one_process_claim_gets_the_whole_gpu_share(tmp_path: Path) -> None:
    add_process(tmp_path, 50, cgroups=[V1])
    windows = SlurmSource("c", ProcFs(tmp_path)).windows({50}, S)
    out = attribute(S, 2 * S, [(50, 1.0)], windows)
    assert [(a.job_id, a.share_ppm) for a in out] == [("slurm:c/123", PPM)]
