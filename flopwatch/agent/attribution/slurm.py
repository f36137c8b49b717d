"""Slurm: a GPU process belongs to the Slurm job whose cgroup it runs in.

slurmd puts every task of a job in a cgroup named after it:

  cgroup v1  /slurm/uid_1000/job_123/step_0/task_0        (one line per hierarchy)
  cgroup v2  /system.slice/slurmstepd.scope/job_123/step_0/user/task_0

The cgroup is the scheduler's word and a user cannot change it, so it wins. Where Slurm tracks
processes without cgroups, SLURM_JOB_ID in the process environment names the job instead
(readable by root only, and set by whoever started the process). A job may declare the precision
of its matrix work with FLOPWATCH_PRECISION=bf16|fp16|tf32|fp8|fp32|fp64 in its environment;
`flopwatch job start --source slurm --precision` (from the prolog) overrides it.

Windows are per process (PROCESS claims, flopwatch.attribution): they beat a GPU claim, so
jobs sharing a GPU (MPS, shards) each get their processes' work.

Run, account and class (flopwatch/runs.py):
  run      the workload's word: FLOPWATCH_RUN in the process environment (the variable is
           configurable), or, where the site configures it (`--slurm-run-from`), the job's
           Comment or WCKey as slurmctld knows them. Else an array task's run is its array job
           (slurmctld's ArrayJobId, else SLURM_ARRAY_JOB_ID), "slurm:CLUSTER/ARRAY_JOB_ID";
           else the job is a run of its own.
  class    FLOPWATCH_RUN_CLASS in the process environment (configurable): pretraining,
           fine-tuning, reinforcement-learning, synthetic-data, evaluation, inference.
  parent   FLOPWATCH_RUN_PARENT in the process environment (configurable): the run (a name of
           the same account) the job's run derives from; only with a run.
  account  the job's Account as slurmctld knows it (`scontrol show job`, flopwatch/agent/
           attribution/scontrol.py), never the process environment, mapped by the operator's
           `--account-map`; unknown where scontrol cannot say.
A run, class or parent that fails its rule is refused (logged, counted) and the work goes to
the job's own run, or to its run without a parent (flopwatch/agent/attribution/labels.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from flopwatch.agent.attribution.labels import AccountMap, Refusals
from flopwatch.agent.attribution.procfs import PidCache, ProcFs
from flopwatch.agent.attribution.scontrol import Scontrol, SlurmJob
from flopwatch.attribution import JobWindow
from flopwatch.errors import ConfigError
from flopwatch.job_ids import slurm_job_id
from flopwatch.model import Precision
from flopwatch.runs import (
    RUN_FROM_ARRAY_JOB,
    RUN_FROM_COMMENT,
    RUN_FROM_ENVIRONMENT,
    RUN_FROM_WCKEY,
    WorkloadClass,
)

log = logging.getLogger(__name__)

_CGROUP_JOB = re.compile(r"/slurm[^/]*/(?:[^/]+/)*?job_(\d+)(?:/|$)")
_JOB_ID = re.compile(r"\d{1,20}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
PRECISION_VARIABLE = "FLOPWATCH_PRECISION"
RUN_VARIABLE = "FLOPWATCH_RUN"
CLASS_VARIABLE = "FLOPWATCH_RUN_CLASS"
PARENT_VARIABLE = "FLOPWATCH_RUN_PARENT"
RUN_FROM = (RUN_FROM_ENVIRONMENT, RUN_FROM_COMMENT, RUN_FROM_WCKEY)


@dataclass(frozen=True)
class SlurmSettings:
    """Where the Slurm source finds a job's run and account (the agent's --slurm-* options)."""

    run_from: str = RUN_FROM_ENVIRONMENT  # "environment", "comment" or "wckey"
    run_variable: str = RUN_VARIABLE
    class_variable: str = CLASS_VARIABLE
    parent_variable: str = PARENT_VARIABLE
    scontrol: str = "scontrol"  # path of scontrol; "" or "off": never ask slurmctld
    scontrol_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.run_from not in RUN_FROM:
            raise ConfigError(f"--slurm-run-from {self.run_from!r}: use one of {RUN_FROM}")
        for flag, name in (
            ("--slurm-run-variable", self.run_variable),
            ("--slurm-class-variable", self.class_variable),
            ("--slurm-parent-variable", self.parent_variable),
        ):
            if not _VARIABLE.fullmatch(name):
                raise ConfigError(f"{flag} {name!r} is not an environment variable name")
        if not self.scontrol_timeout_s > 0:
            raise ConfigError("--scontrol-timeout must be positive")


@dataclass(frozen=True)
class SlurmProcess:
    job: str  # Slurm's numeric job id
    precision: Precision
    via: str  # "cgroup" or "environment"
    run: str = ""  # as the process environment declares it (the run variable)
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    array_job: str = ""  # SLURM_ARRAY_JOB_ID of an array task, else empty
    run_parent: str = ""  # as the process environment declares it (the parent variable)


def job_from_cgroups(paths: Collection[str]) -> str | None:
    for path in paths:
        m = _CGROUP_JOB.search(path)
        if m:
            return m.group(1)
    return None


def _precision(pid: int, env: dict[str, str]) -> Precision:
    try:
        return Precision.parse(env.get(PRECISION_VARIABLE))
    except ValueError as e:
        log.warning(
            "pid %d: %s=%s ignored: %s", pid, PRECISION_VARIABLE, env[PRECISION_VARIABLE], e
        )
        return Precision.UNSPECIFIED


class SlurmSource:
    """PROCESS windows for GPU processes that run inside a Slurm job."""

    name = "slurm"

    def __init__(
        self,
        cluster: str,
        proc: ProcFs,
        settings: SlurmSettings | None = None,
        *,
        accounts: AccountMap | None = None,
        refusals: Refusals | None = None,
        scontrol: Scontrol | None = None,
    ) -> None:
        self._cluster = cluster
        self._proc = proc
        self._settings = settings = settings if settings is not None else SlurmSettings()
        self._accounts = accounts if accounts is not None else AccountMap({})
        self._refusals = refusals if refusals is not None else Refusals()
        if scontrol is None and settings.scontrol not in ("", "off"):
            scontrol = Scontrol(settings.scontrol, timeout_s=settings.scontrol_timeout_s)
        self.scontrol = scontrol
        self._cache: PidCache[SlurmProcess] = PidCache(proc, self.resolve)

    def resolve(self, pid: int) -> SlurmProcess | None:
        env = self._proc.environ(pid) or {}
        from_env = env.get("SLURM_JOB_ID", "")
        from_env = from_env if _JOB_ID.fullmatch(from_env) else ""
        from_cgroup = job_from_cgroups(self._proc.cgroups(pid) or [])
        if from_cgroup and from_env and from_env != from_cgroup:
            log.warning(
                "pid %d: SLURM_JOB_ID=%s in its environment, but its cgroup is job %s's; "
                "using the cgroup",
                pid,
                from_env,
                from_cgroup,
            )
        job = from_cgroup or from_env
        if not job:
            return None
        array = env.get("SLURM_ARRAY_JOB_ID", "")
        return SlurmProcess(
            job,
            _precision(pid, env),
            "cgroup" if from_cgroup else "environment",
            run=env.get(self._settings.run_variable, ""),
            workload_class=self._class(job, env),
            array_job=array if _JOB_ID.fullmatch(array) and array != job else "",
            run_parent=env.get(self._settings.parent_variable, ""),
        )

    def _class(self, job: str, env: dict[str, str]) -> WorkloadClass:
        name = self._settings.class_variable
        try:
            return WorkloadClass.parse(env.get(name))
        except ValueError as e:
            job_id = slurm_job_id(self._cluster, job)
            self._refusals.refuse("class", env[name], str(e), job_id, "class unknown")
            return WorkloadClass.UNKNOWN

    def _run(self, p: SlurmProcess, info: SlurmJob | None) -> tuple[str, str]:
        """(run, where it came from) of a process's job; ("", "") for the job's own run."""
        run_from = self._settings.run_from
        if run_from == RUN_FROM_ENVIRONMENT and p.run:
            return p.run, RUN_FROM_ENVIRONMENT
        if run_from == RUN_FROM_COMMENT and info is not None and info.comment:
            return info.comment, RUN_FROM_COMMENT
        if run_from == RUN_FROM_WCKEY and info is not None and info.wckey:
            return info.wckey, RUN_FROM_WCKEY
        array = info.array_job if info is not None and info.array_job else p.array_job
        if array:
            return slurm_job_id(self._cluster, array), RUN_FROM_ARRAY_JOB
        return "", ""

    def _job(self, job: str) -> SlurmJob | None:
        if self.scontrol is None:
            return None
        info = self.scontrol.job(job)
        if info is not None and "Account" in info.ambiguous:
            self._refusals.refuse(
                "account",
                f"(scontrol, job {job})",
                "is printed twice with different values (the job's name or comment imitates "
                "the field)",
                slurm_job_id(self._cluster, job),
                "the node's default account, if any",
            )
        return info

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        found = sorted(self._cache.lookup(pids).items())
        jobs = {p.job: self._job(p.job) for _, p in found}
        out = []
        for pid, p in found:
            info = jobs[p.job]
            run, run_source = self._run(p, info)
            out.append(
                JobWindow(
                    slurm_job_id(self._cluster, p.job),
                    pid=pid,
                    start_ns=0,
                    precision=p.precision,
                    source=self.name,
                    run=run,
                    account=self._accounts.of(info.account) if info is not None else "",
                    workload_class=p.workload_class,
                    run_source=run_source,
                    run_parent=p.run_parent,
                )
            )
        return out

    def close(self) -> None:
        pass
