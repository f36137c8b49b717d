"""Slurm attribution from a fake /proc: cgroup paths, SLURM_JOB_ID, precision, pid reuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flopwatch.agent.attribution.base import Attributor
from flopwatch.agent.attribution.labels import AccountMap, Refusals
from flopwatch.agent.attribution.procfs import ProcFs
from flopwatch.agent.attribution.slurm import SlurmSettings, SlurmSource, job_from_cgroups
from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.attribution import Claim, JobWindow, attribute
from flopwatch.model import Precision
from flopwatch.model.flops import PPM
from flopwatch.runs import WorkloadClass
from tests.agent.attribution.fake_scontrol import FakeScontrol
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


# -- runs, accounts and classes ------------------------------------------------------------------


def source(
    tmp_path: Path,
    fake: FakeScontrol | None,
    *,
    accounts: AccountMap | None = None,
    refusals: Refusals | None = None,
    **settings: str,
) -> SlurmSource:
    return SlurmSource(
        "c",
        ProcFs(tmp_path / "proc"),
        SlurmSettings(scontrol=str(fake.path) if fake else "off", **settings),
        accounts=accounts,
        refusals=refusals,
    )


def labels(w: JobWindow) -> tuple[str, str, str, WorkloadClass]:
    return (w.run, w.run_source, w.account, w.workload_class)


def test_run_and_class_from_the_environment_account_from_the_scheduler(tmp_path: Path) -> None:
    fake = FakeScontrol(tmp_path)
    fake.add("123", account="physics")
    env = {
        "FLOPWATCH_RUN": "llama-7b",
        "FLOPWATCH_RUN_CLASS": "fine-tuning",
        "SLURM_JOB_ACCOUNT": "someone-else",  # the process's word: never the account
    }
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ=env)
    accounts = AccountMap({"physics": "acme"})
    [w] = source(tmp_path, fake, accounts=accounts).windows({10}, now_ns=S)
    assert labels(w) == ("llama-7b", "environment", "acme", WorkloadClass.FINE_TUNING)


def test_an_unmapped_account_counts_as_itself_and_scontrol_is_asked_once_per_job(
    tmp_path: Path,
) -> None:
    fake = FakeScontrol(tmp_path)
    fake.add("123", account="physics")
    for pid in (10, 11):
        add_process(tmp_path / "proc", pid, cgroups=[V1], environ={})
    src = source(tmp_path, fake)
    for _ in range(3):
        assert [w.account for w in src.windows({10, 11}, now_ns=S)] == ["physics", "physics"]
    assert fake.calls() == [["show", "job", "-o", "123"]]


def test_array_tasks_default_to_their_array_job_as_run(tmp_path: Path) -> None:
    fake = FakeScontrol(tmp_path)
    fake.add("124", array_job="123")
    add_process(tmp_path / "proc", 10, cgroups=["cpu:/slurm/uid_1/job_124/step_0"], environ={})
    # Without scontrol, SLURM_ARRAY_JOB_ID in the environment names it.
    env = {"SLURM_JOB_ID": "125", "SLURM_ARRAY_JOB_ID": "123"}
    add_process(tmp_path / "proc", 11, cgroups=["::/user.slice"], environ=env)
    [w] = source(tmp_path, fake).windows({10}, now_ns=S)
    assert (w.job_id, w.run, w.run_source) == ("slurm:c/124", "slurm:c/123", "array-job")
    [w] = source(tmp_path, None).windows({11}, now_ns=S)
    assert (w.job_id, w.run, w.run_source) == ("slurm:c/125", "slurm:c/123", "array-job")
    # A declared run beats the array job.
    add_process(tmp_path / "proc", 12, cgroups=[], environ={**env, "FLOPWATCH_RUN": "sweep"})
    [w] = source(tmp_path, None).windows({12}, now_ns=S)
    assert (w.run, w.run_source) == ("sweep", "environment")


@pytest.mark.parametrize(
    ("run_from", "expected"),
    [("comment", ("llama 7b", "comment")), ("wckey", ("proj-x", "wckey"))],
)
def test_the_site_may_take_the_run_from_the_jobs_comment_or_wckey(
    tmp_path: Path, run_from: str, expected: tuple[str, str]
) -> None:
    fake = FakeScontrol(tmp_path)
    fake.add("123", comment="llama 7b", wckey="*proj-x")
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ={"FLOPWATCH_RUN": "ignored"})
    [w] = source(tmp_path, fake, run_from=run_from).windows({10}, now_ns=S)
    assert (w.run, w.run_source) == expected


def test_the_run_variables_are_configurable(tmp_path: Path) -> None:
    env = {"MY_RUN": "r1", "MY_CLASS": "evaluation", "FLOPWATCH_RUN": "not-this"}
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ=env)
    src = source(tmp_path, None, run_variable="MY_RUN", class_variable="MY_CLASS")
    [w] = src.windows({10}, now_ns=S)
    assert labels(w) == ("r1", "environment", "", WorkloadClass.EVALUATION)


def test_a_bad_class_is_refused_and_counted_and_the_work_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ={"FLOPWATCH_RUN_CLASS": "train"})
    refusals = Refusals()
    with caplog.at_level(logging.WARNING):
        [w] = source(tmp_path, None, refusals=refusals).windows({10}, now_ns=S)
    assert (w.job_id, w.workload_class) == ("slurm:c/123", WorkloadClass.UNKNOWN)
    assert refusals.snapshot() == {"class": 1}
    assert "class 'train' refused" in caplog.text and "unknown workload class" in caplog.text


def test_a_job_name_imitating_the_account_leaves_the_account_unknown(tmp_path: Path) -> None:
    fake = FakeScontrol(tmp_path)
    fake.add("123", account="physics", name="x Nice=0 Account=victim QOS=normal")
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ={})
    refusals = Refusals()
    [w] = source(tmp_path, fake, refusals=refusals).windows({10}, now_ns=S)
    assert w.account == ""
    assert refusals.snapshot() == {"account": 1}


@pytest.mark.parametrize(
    ("run", "why"),
    [
        ("llama\x1b]0;pwned\x07", "unprintable"),
        ("slurm:c/999", "form of a job id"),
        ("r" * 300, "longer than 256"),
    ],
    ids=["terminal-escape", "job-id-form", "overlong"],
)
def test_a_bad_run_is_refused_and_the_work_stays_in_the_jobs_own_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, run: str, why: str
) -> None:
    """End of the agent's path: the Slurm source's window through the attributor into the
    record's attribution."""
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ={"FLOPWATCH_RUN": run})
    refusals = Refusals()
    attributor = Attributor([source(tmp_path, None, refusals=refusals)], refusals=refusals)
    with caplog.at_level(logging.WARNING):
        windows = attributor.windows([reading_of(10)])
        attributor.windows([reading_of(10)])  # the next round: counted once
    [a] = attribute(S, 2 * S, [(10, 1.0)], windows)
    assert (a.job_id, a.run, a.run_id, a.share_ppm) == ("slurm:c/123", "", "slurm:c/123", PPM)
    assert refusals.snapshot() == {"run": 1}
    assert why in caplog.text and "the job's own run" in caplog.text
    assert "\x1b" not in caplog.text


def reading_of(pid: int) -> GpuReading:
    return GpuReading(
        gpu=GpuInfo(uuid="GPU-1", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980),
        start_ns=S,
        end_ns=2 * S,
        pipe_busy=None,
        sm_clock_mhz_s=1500.0,
        clock_samples=10,
        processes=(ProcessShare(pid, 1.0),),
    )


# -- the run's parent ------------------------------------------------------------------------


def test_the_parent_run_comes_from_the_environment_and_reaches_the_record(tmp_path: Path) -> None:
    env = {"FLOPWATCH_RUN": "llama-ft", "FLOPWATCH_RUN_PARENT": "llama"}
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ=env)
    attributor = Attributor([source(tmp_path, None)])
    [a] = attribute(S, 2 * S, [(10, 1.0)], attributor.windows([reading_of(10)]))
    assert (a.run, a.run_parent) == ("llama-ft", "llama")
    # The variable is configurable, like the run's.
    add_process(tmp_path / "proc", 11, cgroups=[V1], environ={**env, "MY_PARENT": "base"})
    [w] = source(tmp_path, None, parent_variable="MY_PARENT").windows({11}, now_ns=S)
    assert (w.run, w.run_parent) == ("llama-ft", "base")


@pytest.mark.parametrize(
    ("env", "run", "why"),
    [
        ({"FLOPWATCH_RUN_PARENT": "llama"}, "", "declared without a run"),
        ({"FLOPWATCH_RUN": "ft", "FLOPWATCH_RUN_PARENT": "ll\x1b[2Jama"}, "ft", "unprintable"),
        ({"FLOPWATCH_RUN": "slurm:c/1", "FLOPWATCH_RUN_PARENT": "llama"}, "", "without a run"),
    ],
    ids=["parent-without-run", "terminal-escape-in-parent", "parent-of-a-refused-run"],
)
def test_a_parent_without_a_run_or_malformed_is_refused_and_the_work_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, env: dict[str, str], run: str, why: str
) -> None:
    add_process(tmp_path / "proc", 10, cgroups=[V1], environ=env)
    refusals = Refusals()
    attributor = Attributor([source(tmp_path, None, refusals=refusals)], refusals=refusals)
    with caplog.at_level(logging.WARNING):
        windows = attributor.windows([reading_of(10)])
        attributor.windows([reading_of(10)])  # the next round: counted once
    [a] = attribute(S, 2 * S, [(10, 1.0)], windows)
    assert (a.job_id, a.run_parent, a.share_ppm) == ("slurm:c/123", "", PPM)
    assert a.run == run
    assert refusals.snapshot()["parent"] == 1
    assert why in caplog.text and "its run, with no parent" in caplog.text
    assert "\x1b" not in caplog.text
