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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from flopwatch.agent.attribution.procfs import PidCache, ProcFs
from flopwatch.attribution import JobWindow
from flopwatch.job_ids import slurm_job_id
from flopwatch.model import Precision

log = logging.getLogger(__name__)

_CGROUP_JOB = re.compile(r"/slurm[^/]*/(?:[^/]+/)*?job_(\d+)(?:/|$)")
_JOB_ID = re.compile(r"\d{1,20}")
PRECISION_VARIABLE = "FLOPWATCH_PRECISION"


@dataclass(frozen=True)
class SlurmProcess:
    job: str  # Slurm's numeric job id
    precision: Precision
    via: str  # "cgroup" or "environment"


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

    def __init__(self, cluster: str, proc: ProcFs) -> None:
        self._cluster = cluster
        self._proc = proc
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
        return SlurmProcess(job, _precision(pid, env), "cgroup" if from_cgroup else "environment")

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        return [
            JobWindow(
                slurm_job_id(self._cluster, p.job),
                pid=pid,
                start_ns=0,
                precision=p.precision,
                source=self.name,
            )
            for pid, p in sorted(self._cache.lookup(pids).items())
        ]

    def close(self) -> None:
        pass
