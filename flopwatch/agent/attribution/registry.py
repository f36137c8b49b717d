"""Jobs registered by hand or by a scheduler's hooks (`flopwatch job start|end`), persisted.

Each registration is a window [start, end) of a cluster-namespaced job id that claims whole GPUs
(GPU claims, flopwatch.attribution), or no GPU at all: then it only declares the job's
precision, run, account, class and parent run for work other sources attribute to it (a Slurm
job's processes, a Kubernetes pod). Registrations come over the operator-only control socket,
so the account given is the operator's word; run, account and parent run are checked like job
ids (a parent only with a run), and a value that fails is refused with the reason (nothing is
registered).

The registry lives in STATE_DIR/jobs.json, replaced atomically (tmp, fsync, rename, fsync dir)
before a start or end is answered, so an agent restarted in the middle of a job keeps
attributing its work. Ended jobs are kept for an hour (records of intervals that straddle the end
still find them), then forgotten. Thread-safe: the control server writes while the sampling
thread reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flopwatch.agent.attribution.base import Declared
from flopwatch.agent.attribution.labels import account_refusal, parent_refusal, run_refusal
from flopwatch.agent.backends.base import GpuInfo
from flopwatch.attribution import ALL_GPUS, JobWindow
from flopwatch.errors import ConfigError, JobRegistryError
from flopwatch.identifiers import shown
from flopwatch.job_ids import check_job_text, k8s_job_id, manual_job_id, slurm_job_id
from flopwatch.model import Precision
from flopwatch.runs import RUN_FROM_MANUAL, WorkloadClass

SOURCES = ("manual", "slurm", "kubernetes")
MAX_REGISTERED_JOBS = 4096
MAX_GPUS_PER_JOB = 1024
KEEP_ENDED_NS = 3600 * 10**9
FORMAT = 1
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SLURM_JOB = re.compile(r"\d{1,20}")


@dataclass(frozen=True)
class RegisteredJob:
    job_id: str  # cluster-namespaced
    source: str  # one of SOURCES
    gpus: tuple[str, ...]  # GPU or MIG UUIDs, or (ALL_GPUS,); empty: declares precision only
    precision: Precision
    start_ns: int
    end_ns: int | None = None
    run: str = ""  # empty: not declared here
    account: str = ""  # empty: not given here (the sources' or the node's default)
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    run_parent: str = ""  # empty: not declared here

    @property
    def declared(self) -> Declared:
        return Declared(
            self.precision, self.run, self.account, self.workload_class, self.run_parent
        )

    def windows(self) -> list[JobWindow]:
        return [
            JobWindow(
                self.job_id,
                pid=None,
                start_ns=self.start_ns,
                end_ns=self.end_ns,
                precision=self.precision,
                source=self.source,
                gpu=gpu,
                run=self.run,
                account=self.account,
                workload_class=self.workload_class,
                run_source=RUN_FROM_MANUAL if self.run else "",
                run_parent=self.run_parent,
            )
            for gpu in self.gpus
        ]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "source": self.source,
            "gpus": list(self.gpus),
            "precision": self.precision.value,
            "start_unix_ns": self.start_ns,
            "end_unix_ns": self.end_ns,
        }
        if self.run:
            out["run"] = self.run
        if self.account:
            out["account"] = self.account
        if self.workload_class is not WorkloadClass.UNKNOWN:
            out["class"] = self.workload_class.value
        if self.run_parent:
            out["parent"] = self.run_parent
        return out

    @classmethod
    def from_json(cls, item: Any) -> RegisteredJob:
        if not isinstance(item, dict):
            raise ValueError("a job must be an object")
        job_id, source, gpus = item.get("job_id"), item.get("source"), item.get("gpus")
        start, end = item.get("start_unix_ns"), item.get("end_unix_ns")
        if not isinstance(job_id, str) or not job_id or source not in SOURCES:
            raise ValueError("job_id must be a string and source one of " + ", ".join(SOURCES))
        if not isinstance(gpus, list) or not all(isinstance(g, str) for g in gpus):
            raise ValueError("gpus must be a list of strings")
        if not isinstance(start, int) or not (end is None or isinstance(end, int)):
            raise ValueError("start_unix_ns and end_unix_ns must be integers")
        run, account = item.get("run", ""), item.get("account", "")
        parent = item.get("parent", "")
        if not all(isinstance(v, str) for v in (run, account, parent)):
            raise ValueError("run, account and parent must be strings")
        return cls(
            job_id,
            source,
            tuple(gpus),
            Precision.parse(item.get("precision")),
            start,
            end,
            run,
            account,
            WorkloadClass.parse(item.get("class")),
            parent,
        )


def namespaced_job_id(cluster: str, source: str, job: str) -> str:
    """The id records carry for a job a scheduler (or a person) names `job`."""
    try:
        if source == "manual":
            return manual_job_id(cluster, check_job_text(job))
        if source == "slurm":
            if not _SLURM_JOB.fullmatch(job):
                raise ConfigError(f"Slurm job id {job!r} must be a number (SLURM_JOB_ID)")
            return slurm_job_id(cluster, job)
        if source == "kubernetes":
            namespace, _, pod = job.partition("/")
            if not (_DNS_LABEL.fullmatch(namespace) and _DNS_LABEL.fullmatch(pod)):
                raise ConfigError(f"Kubernetes job {job!r} must be NAMESPACE/POD")
            return k8s_job_id(cluster, namespace, pod)
    except ConfigError as e:
        raise JobRegistryError("invalid", str(e)) from None
    raise JobRegistryError("invalid", f"source {source!r} must be one of {', '.join(SOURCES)}")


def check_labels(run: str, account: str, parent: str = "") -> None:
    """Refuse a registration's run, account or parent run that fails its rule
    (flopwatch/runs.py; a parent needs a run)."""
    for what, value, why in (
        ("run", run, run_refusal(run, RUN_FROM_MANUAL) if run else None),
        ("account", account, account_refusal(account) if account else None),
        ("parent", parent, parent_refusal(parent, run) if parent else None),
    ):
        if why is not None:
            raise JobRegistryError("invalid", f"{what} '{shown(value)[:300]}' {why}")


def resolve_gpus(specs: Iterable[str], gpus: Sequence[GpuInfo]) -> tuple[str, ...]:
    """NVML indices, GPU or MIG UUIDs, or "all" -> the UUIDs the job claims."""
    wanted = [s.strip() for s in specs if s.strip()]
    if "all" in wanted:
        if len(wanted) > 1:
            raise JobRegistryError("invalid", "'all' cannot be combined with other GPUs")
        return (ALL_GPUS,)
    if len(wanted) > MAX_GPUS_PER_JOB:
        raise JobRegistryError("invalid", f"more than {MAX_GPUS_PER_JOB} GPUs")
    uuids = {g.uuid for g in gpus} | {g.mig_instance for g in gpus if g.mig_instance}
    out: list[str] = []
    for spec in wanted:
        # an index names the GPU, and all its MIG instances where it is partitioned
        found = [g.uuid for g in gpus if str(g.index) == spec] or ([spec] if spec in uuids else [])
        if not found:
            known = ", ".join([*sorted({str(g.index) for g in gpus}), "all"])
            raise JobRegistryError(
                "invalid", f"GPU {spec!r} is not on this node (indices {known}, or UUIDs)"
            )
        out.extend(u for u in found if u not in out)
    return tuple(out)


class JobRegistry:
    """Registered jobs of this node, as an attribution source."""

    name = "registry"

    def __init__(
        self,
        path: Path,
        *,
        cluster: str,
        gpus: Sequence[GpuInfo],
        now_ns: Callable[[], int] = time.time_ns,
        max_jobs: int = MAX_REGISTERED_JOBS,
    ) -> None:
        self.path = path
        self._cluster = cluster
        self._gpus = tuple(gpus)
        self._now_ns = now_ns
        self._max_jobs = max_jobs
        self._lock = threading.Lock()
        self._jobs: tuple[RegisteredJob, ...] = self._load()

    def _load(self) -> tuple[RegisteredJob, ...]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"job registry {self.path} is unreadable ({e}); move it aside to start "
                "without the registered jobs"
            ) from e
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"expected an object with format {FORMAT}")
            return tuple(RegisteredJob.from_json(item) for item in data.get("jobs", []))
        except ValueError as e:
            raise ConfigError(f"job registry {self.path}: {e}") from e

    def _save(self, jobs: tuple[RegisteredJob, ...]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"format": FORMAT, "jobs": [j.to_json() for j in jobs]}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise JobRegistryError("io", f"cannot write job registry {self.path}: {e}") from e
        self._jobs = jobs

    def _running(self, job_id: str) -> RegisteredJob | None:
        return next((j for j in self._jobs if j.job_id == job_id and j.end_ns is None), None)

    def start(
        self,
        job: str,
        source: str,
        gpus: Iterable[str],
        precision: Precision,
        *,
        run: str = "",
        account: str = "",
        workload_class: WorkloadClass = WorkloadClass.UNKNOWN,
        run_parent: str = "",
    ) -> RegisteredJob:
        job_id = namespaced_job_id(self._cluster, source or "manual", job)
        claimed = resolve_gpus(gpus, self._gpus)
        check_labels(run, account, run_parent)
        with self._lock:
            running = self._running(job_id)
            if running is not None:
                same = (claimed, precision, run, account, workload_class, run_parent)
                if (
                    running.gpus,
                    running.precision,
                    running.run,
                    running.account,
                    running.workload_class,
                    running.run_parent,
                ) == same:
                    return running  # a hook retried
                raise JobRegistryError(
                    "conflict",
                    f"job {job_id} is already running with GPUs {list(running.gpus)}, "
                    f"precision {running.precision.value}, run {running.run or '(its own)'!r}, "
                    f"account {running.account or '(none)'!r}, class "
                    f"{running.workload_class.value} and parent "
                    f"{running.run_parent or '(none)'!r}; end it first",
                )
            now = self._now_ns()
            kept = tuple(
                j for j in self._jobs if j.end_ns is None or j.end_ns > now - KEEP_ENDED_NS
            )
            if len(kept) >= self._max_jobs:
                raise JobRegistryError("full", f"{len(kept)} jobs registered; end some first")
            new = RegisteredJob(
                job_id,
                source or "manual",
                claimed,
                precision,
                now,
                run=run,
                account=account,
                workload_class=workload_class,
                run_parent=run_parent,
            )
            self._save((*kept, new))
            return new

    def end(self, job: str, source: str) -> RegisteredJob:
        job_id = namespaced_job_id(self._cluster, source or "manual", job)
        with self._lock:
            running = self._running(job_id)
            if running is None:
                ended = [j for j in self._jobs if j.job_id == job_id]
                if ended:
                    return ended[-1]  # a hook retried
                raise JobRegistryError("not_found", f"no job {job_id} is registered")
            done = replace(running, end_ns=max(self._now_ns(), running.start_ns))
            self._save(tuple(done if j is running else j for j in self._jobs))
            return done

    def jobs(self) -> list[RegisteredJob]:
        return list(self._jobs)

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        return [w for j in self._jobs for w in j.windows()]

    def declared(self) -> dict[str, Declared]:
        """Job id -> what was registered for it (running or recently ended jobs), for jobs
        registered with a precision, run, account or class."""
        return {j.job_id: j.declared for j in self._jobs if j.declared != Declared()}

    def close(self) -> None:
        pass
