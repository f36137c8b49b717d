"""The job registry (`flopwatch job start|end`): ids, GPU claims, persistence, and the
attributor applying declared precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flopwatch.agent.attribution.base import Attributor
from flopwatch.agent.attribution.labels import Refusals
from flopwatch.agent.attribution.registry import JobRegistry, resolve_gpus
from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.attribution import ALL_GPUS, JobWindow, attribute
from flopwatch.errors import ConfigError, JobRegistryError
from flopwatch.model import Precision
from flopwatch.runs import WorkloadClass

S = 10**9
GPUS = [
    GpuInfo(uuid="GPU-0", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980, index=0),
    GpuInfo(uuid="GPU-1", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980, index=1),
    GpuInfo(
        uuid="GPU-2",
        name="H100",
        sm_count=16,
        cc=(9, 0),
        max_sm_clock_mhz=1980,
        index=2,
        mig_instance="MIG-a",
    ),
    GpuInfo(
        uuid="GPU-2",
        name="H100",
        sm_count=16,
        cc=(9, 0),
        max_sm_clock_mhz=1980,
        index=2,
        mig_instance="MIG-b",
    ),
]


class Clock:
    def __init__(self, t: int = 100 * S) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def registry(tmp_path: Path, clock: Clock | None = None, **kw: object) -> JobRegistry:
    return JobRegistry(
        tmp_path / "state" / "jobs.json",
        cluster="cluster-a",
        gpus=GPUS,
        now_ns=clock or Clock(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("specs", "claimed"),
    [
        (["0", "1"], ("GPU-0", "GPU-1")),
        (["GPU-1", "1"], ("GPU-1",)),
        (["2"], ("GPU-2",)),  # a MIG-partitioned GPU by index: all its instances
        (["MIG-b"], ("MIG-b",)),
        (["all"], (ALL_GPUS,)),
        ([], ()),
    ],
)
def test_gpus_resolve_to_uuids(specs: list[str], claimed: tuple[str, ...]) -> None:
    assert resolve_gpus(specs, GPUS) == claimed


@pytest.mark.parametrize(
    ("specs", "message"),
    [(["7"], "GPU '7' is not on this node"), (["all", "0"], "'all' cannot be combined")],
)
def test_unknown_gpus_are_refused(specs: list[str], message: str) -> None:
    with pytest.raises(JobRegistryError, match=message) as e:
        resolve_gpus(specs, GPUS)
    assert e.value.reason == "invalid"


@pytest.mark.parametrize(
    ("source", "job", "job_id"),
    [
        ("slurm", "123456", "slurm:cluster-a/123456"),
        ("kubernetes", "ml/train-0", "k8s:cluster-a/ml/train-0"),
        ("manual", "bench-7", "manual:cluster-a/bench-7"),
        ("", "bench-8", "manual:cluster-a/bench-8"),
    ],
)
def test_job_ids_are_namespaced_by_source_and_cluster(
    tmp_path: Path, source: str, job: str, job_id: str
) -> None:
    started = registry(tmp_path).start(job, source, ["0"], Precision.UNSPECIFIED)
    assert started.job_id == job_id


@pytest.mark.parametrize(
    ("source", "job"),
    [
        ("slurm", "12a"),
        ("kubernetes", "just-a-pod"),
        ("kubernetes", "NS/Pod"),
        ("manual", "has space"),
        ("manual", ""),
        ("pbs", "1"),
    ],
)
def test_bad_job_names_are_refused(tmp_path: Path, source: str, job: str) -> None:
    with pytest.raises(JobRegistryError) as e:
        registry(tmp_path).start(job, source, [], Precision.UNSPECIFIED)
    assert e.value.reason == "invalid"


def test_start_claims_gpus_from_now_and_end_closes_the_window(tmp_path: Path) -> None:
    clock = Clock(10 * S)
    reg = registry(tmp_path, clock)
    reg.start("42", "slurm", ["1"], Precision.FP8)
    [w] = reg.windows(set(), 11 * S)
    assert (w.gpu, w.start_ns, w.end_ns, w.precision) == ("GPU-1", 10 * S, None, Precision.FP8)
    clock.t = 12 * S + S // 2
    ended = reg.end("42", "slurm")
    assert ended.end_ns == 12 * S + S // 2
    # the interval [12, 13) straddles the end: half of it is the job's
    out = attribute(12 * S, 13 * S, [], reg.windows(set(), 13 * S), gpu_ids=["GPU-1"])
    assert {a.job_id: a.share_ppm for a in out} == {
        "slurm:cluster-a/42": 500_000,
        "unattributed": 500_000,
    }


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = registry(tmp_path, clock)
    first.start("a", "manual", ["all"], Precision.TF32)
    first.start("ml/p", "kubernetes", [], Precision.FP8)
    again = registry(tmp_path, clock)
    assert again.jobs() == first.jobs()
    assert (tmp_path / "state" / "jobs.json").stat().st_mode & 0o777 == 0o600
    again.end("a", "manual")
    assert registry(tmp_path, clock).jobs()[0].end_ns == clock.t


def test_repeated_start_is_idempotent_and_a_different_one_conflicts(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    first = reg.start("7", "slurm", ["0"], Precision.BF16)
    assert reg.start("7", "slurm", ["0"], Precision.BF16) == first
    with pytest.raises(JobRegistryError, match="already running") as e:
        reg.start("7", "slurm", ["1"], Precision.BF16)
    assert e.value.reason == "conflict"


def test_end_of_unknown_job_is_not_found_and_repeated_end_is_harmless(tmp_path: Path) -> None:
    clock = Clock()
    reg = registry(tmp_path, clock)
    with pytest.raises(JobRegistryError) as e:
        reg.end("nope", "manual")
    assert e.value.reason == "not_found"
    reg.start("j", "manual", ["0"], Precision.UNSPECIFIED)
    first = reg.end("j", "manual")
    clock.t += S
    assert reg.end("j", "manual") == first


def test_a_requeued_job_gets_a_second_window(tmp_path: Path) -> None:
    clock = Clock(10 * S)
    reg = registry(tmp_path, clock)
    reg.start("5", "slurm", ["0"], Precision.UNSPECIFIED)
    clock.t = 20 * S
    reg.end("5", "slurm")
    clock.t = 30 * S
    reg.start("5", "slurm", ["0"], Precision.UNSPECIFIED)
    spans = [(w.start_ns, w.end_ns) for w in reg.windows(set(), 31 * S)]
    assert spans == [(10 * S, 20 * S), (30 * S, None)]


def test_ended_jobs_are_forgotten_after_an_hour_and_the_registry_is_bounded(
    tmp_path: Path,
) -> None:
    clock = Clock(10 * S)
    reg = registry(tmp_path, clock, max_jobs=2)
    reg.start("old", "manual", ["0"], Precision.UNSPECIFIED)
    reg.end("old", "manual")
    reg.start("run", "manual", ["0"], Precision.UNSPECIFIED)
    with pytest.raises(JobRegistryError) as e:
        reg.start("more", "manual", ["0"], Precision.UNSPECIFIED)
    assert e.value.reason == "full"
    clock.t += 3601 * S
    reg.start("more", "manual", ["1"], Precision.UNSPECIFIED)
    assert [j.job_id for j in reg.jobs()] == ["manual:cluster-a/run", "manual:cluster-a/more"]


@pytest.mark.parametrize(
    "content",
    ["not json", '{"format": 99, "jobs": []}', '{"format": 1, "jobs": [{"job_id": 5}]}'],
)
def test_a_damaged_registry_file_stops_the_agent_with_a_clear_error(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "state" / "jobs.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"job registry .*jobs\.json"):
        registry(tmp_path)


def test_registry_file_is_plain_json(tmp_path: Path) -> None:
    registry(tmp_path).start("j", "manual", ["0"], Precision.FP16)
    data = json.loads((tmp_path / "state" / "jobs.json").read_text())
    assert data["format"] == 1
    assert data["jobs"][0] | {"start_unix_ns": 0} == {
        "job_id": "manual:cluster-a/j",
        "source": "manual",
        "gpus": ["GPU-0"],
        "precision": "fp16",
        "start_unix_ns": 0,
        "end_unix_ns": None,
    }


class FixedSource:
    name = "fixed"

    def __init__(self, windows: list[JobWindow]) -> None:
        self._windows = windows

    def windows(self, pids: object, now_ns: int) -> list[JobWindow]:
        return self._windows

    def close(self) -> None:
        pass


def test_declared_precision_from_the_registry_applies_to_other_sources_windows(
    tmp_path: Path,
) -> None:
    reg = registry(tmp_path)
    reg.start("ml/p", "kubernetes", [], Precision.FP8)  # declares only: claims no GPU
    pod = JobWindow("k8s:cluster-a/ml/p", pid=None, start_ns=0, gpu="GPU-0", source="kubernetes")
    other = JobWindow("k8s:cluster-a/ml/q", pid=None, start_ns=0, gpu="GPU-1", source="kubernetes")
    attributor = Attributor([reg, FixedSource([pod, other])], declared=reg.declared)
    reading = GpuReading(
        gpu=GPUS[0],
        start_ns=0,
        end_ns=S,
        pipe_busy=None,
        sm_clock_mhz_s=1.0,
        clock_samples=1,
        processes=(ProcessShare(1, 1.0),),
    )
    windows = attributor.windows([reading])
    assert {w.job_id: w.precision for w in windows} == {
        "k8s:cluster-a/ml/p": Precision.FP8,
        "k8s:cluster-a/ml/q": Precision.UNSPECIFIED,
    }


def test_windows_that_ended_before_the_batch_are_left_out(tmp_path: Path) -> None:
    clock = Clock(10 * S)
    reg = registry(tmp_path, clock)
    reg.start("done", "manual", ["0"], Precision.UNSPECIFIED)
    clock.t = 20 * S
    reg.end("done", "manual")
    reg.start("live", "manual", ["0"], Precision.UNSPECIFIED)
    reading = GpuReading(
        gpu=GPUS[0],
        start_ns=20 * S,
        end_ns=21 * S,
        pipe_busy=None,
        sm_clock_mhz_s=1.0,
        clock_samples=1,
    )
    windows = Attributor([reg]).windows([reading])
    assert [w.job_id for w in windows] == ["manual:cluster-a/live"]


# -- runs, accounts and classes ------------------------------------------------------------------


def reading_on(gpu: GpuInfo, pid: int = 1) -> GpuReading:
    return GpuReading(
        gpu=gpu,
        start_ns=0,
        end_ns=S,
        pipe_busy=None,
        sm_clock_mhz_s=1.0,
        clock_samples=1,
        processes=(ProcessShare(pid, 1.0),),
    )


def test_a_registration_declares_run_account_and_class_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    job = registry(tmp_path).start(
        "j",
        "manual",
        ["0"],
        Precision.BF16,
        run="llama-7b",
        account="acme",
        workload_class=WorkloadClass.PRETRAINING,
    )
    assert (job.run, job.account, job.workload_class) == (
        "llama-7b",
        "acme",
        WorkloadClass.PRETRAINING,
    )
    [w] = registry(tmp_path).windows(set(), 0)  # read back from the file
    assert (w.run, w.run_source, w.account, w.workload_class) == (
        "llama-7b",
        "manual",
        "acme",
        WorkloadClass.PRETRAINING,
    )


def test_a_registry_file_from_before_runs_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jobs.json"
    path.parent.mkdir()
    old = {
        "job_id": "manual:cluster-a/j",
        "source": "manual",
        "gpus": ["GPU-0"],
        "precision": "fp16",
        "start_unix_ns": 5,
        "end_unix_ns": None,
    }
    path.write_text(json.dumps({"format": 1, "jobs": [old]}))
    [job] = registry(tmp_path).jobs()
    assert (job.run, job.account, job.workload_class) == ("", "", WorkloadClass.UNKNOWN)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"run": "bad\nrun"}, r"run 'bad\\nrun' holds the unprintable"),
        ({"run": "slurm:cluster-a/9"}, "form of a job id"),
        ({"account": "a" * 300}, "longer than 256"),
    ],
)
def test_a_bad_run_or_account_refuses_the_registration(
    tmp_path: Path, kw: dict[str, str], words: str
) -> None:
    reg = registry(tmp_path)
    with pytest.raises(JobRegistryError, match=words) as e:
        reg.start("j", "manual", ["0"], Precision.UNSPECIFIED, **kw)  # type: ignore[arg-type]
    assert e.value.reason == "invalid" and reg.jobs() == []


def test_restarting_a_job_with_another_run_is_a_conflict(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.start("j", "manual", ["0"], Precision.UNSPECIFIED, run="a")
    assert reg.start("j", "manual", ["0"], Precision.UNSPECIFIED, run="a").run == "a"
    with pytest.raises(JobRegistryError, match="run 'a'") as e:
        reg.start("j", "manual", ["0"], Precision.UNSPECIFIED, run="b")
    assert e.value.reason == "conflict"


def test_what_a_registration_declares_overrides_the_sources_and_the_default_account_fills_in(
    tmp_path: Path,
) -> None:
    """The operator's word (a prolog's `flopwatch job start --run --account`) beats what the
    job's processes declare; the node's default account goes to windows without one."""
    reg = registry(tmp_path)
    reg.start(
        "42",
        "slurm",
        [],
        Precision.UNSPECIFIED,
        run="operator-run",
        account="acme",
        workload_class=WorkloadClass.EVALUATION,
    )
    declared = JobWindow(
        "slurm:cluster-a/42", pid=1, start_ns=0, source="slurm", run="workload-run"
    )
    other = JobWindow(
        "slurm:cluster-a/43", pid=2, start_ns=0, source="slurm", run="x", run_source="environment"
    )
    attributor = Attributor(
        [reg, FixedSource([declared, other])], declared=reg.declared, default_account="lab"
    )
    windows = {w.job_id: w for w in attributor.windows([reading_on(GPUS[0])])}
    mine, theirs = windows["slurm:cluster-a/42"], windows["slurm:cluster-a/43"]
    assert (mine.run, mine.run_source, mine.account, mine.workload_class) == (
        "operator-run",
        "manual",
        "acme",
        WorkloadClass.EVALUATION,
    )
    assert (theirs.run, theirs.account) == ("x", "lab")


def test_a_bad_account_from_a_source_is_refused_and_the_default_applies(
    tmp_path: Path,
) -> None:
    w = JobWindow("j", pid=1, start_ns=0, account="acme\x1b[31m")
    refusals = Refusals()
    attributor = Attributor([FixedSource([w])], refusals=refusals, default_account="lab")
    [got] = attributor.windows([reading_on(GPUS[0])])
    assert got.account == "lab"
    assert refusals.snapshot() == {"account": 1}
