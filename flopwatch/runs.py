"""Runs, accounts and workload classes: the levels above a job, and their rules. Pure.

Every attribution of a record names, beside its job (flopwatch/job_ids.py):

  run       the training run (or other workload) whose compute accrues to one model. Declared
            by the workload (an environment variable, a Slurm comment or WCKey where the site
            says so), by an operator (`flopwatch job start --run`), or derived (a Slurm array
            task's array job). Undeclared, the job is a run of its own: the run's id is then
            the job id, and records leave the field empty (`run_of`). A Kubernetes pod
            declares it with a label or annotation; else its top controller is its run
            ("k8s:CLUSTER/NAMESPACE/KIND/NAME", flopwatch/job_ids.py). Run names are not
            namespaced by cluster: one run spans jobs, nodes and clusters.
  account   who is accountable for the work (a customer, a developer), set by the operator,
            never by the workload: the scheduler's account (Slurm's, as slurmctld knows it, not
            the process environment), an admin's mapping of it, the node's default account, or
            `flopwatch job start --account` over the operator-only control socket. Empty: no
            account is known, shown as "(none)"; never invented from what a workload says.
  class     what kind of work the run does (`WorkloadClass`); the workload's word.

Trust: a workload can choose its run's name and class, so it can split one run into many names
or join another run of its account; it cannot choose its account. Totals per account (over
rolling windows) catch a run split into many names. A run is therefore identified by its
account and its name together: the same name under two accounts is two runs.

Checks: run, account and the run's source follow the one identifier rule
(flopwatch/identifiers.py) where they are set. A run in the form of a job id
("SCHEME:CLUSTER/...") is one the agent derived from the scheduler's objects (a Slurm array job,
a pod's top controller: DERIVED_RUN_SOURCES); a workload or a person cannot declare one
(`declared_run_problem`), and a verifier checks that it names the record's cluster, as it does
for job ids.
"""

from __future__ import annotations

import enum

from flopwatch.identifiers import identifier_problem, shown
from flopwatch.job_ids import cluster_of

NO_ACCOUNT_SHOWN = "(none)"

# Where a run came from (JobShare.run_source); empty with an empty run.
RUN_FROM_ENVIRONMENT = "environment"  # a variable in the job's processes (FLOPWATCH_RUN)
RUN_FROM_COMMENT = "comment"  # the Slurm job's comment
RUN_FROM_WCKEY = "wckey"  # the Slurm job's WCKey
RUN_FROM_ARRAY_JOB = "array-job"  # a Slurm array task's array job
RUN_FROM_MANUAL = "manual"  # `flopwatch job start --run`
RUN_FROM_JOBS_FILE = "jobs-file"  # a JOBS.json entry (replay, demo)
RUN_FROM_POD_LABEL = "pod-label"  # a Kubernetes pod's label (flopwatch.dev/run)
RUN_FROM_POD_ANNOTATION = "pod-annotation"  # a Kubernetes pod's annotation (flopwatch.dev/run)
RUN_FROM_CONTROLLER = "controller"  # a Kubernetes pod's top controller (a JobSet, a PyTorchJob)
# Runs the agent derives from the scheduler's objects, named in a job id's form
# ("SCHEME:CLUSTER/..."), which nobody can declare.
DERIVED_RUN_SOURCES = frozenset({RUN_FROM_ARRAY_JOB, RUN_FROM_CONTROLLER})


class WorkloadClass(enum.Enum):
    """What kind of work a run does. UNKNOWN is the class of a run that declared none."""

    UNKNOWN = "unknown"
    PRETRAINING = "pretraining"
    FINE_TUNING = "fine-tuning"
    REINFORCEMENT_LEARNING = "reinforcement-learning"
    SYNTHETIC_DATA = "synthetic-data"
    EVALUATION = "evaluation"
    INFERENCE = "inference"

    @classmethod
    def parse(cls, text: str | None) -> WorkloadClass:
        """A class from its name (any case, '_' for '-'); None or empty: UNKNOWN."""
        if not text:
            return cls.UNKNOWN
        word = text.strip().lower().replace("_", "-")
        for c in cls:
            if c.value == word:
                return c
        names = ", ".join(c.value for c in cls)
        raise ValueError(f"unknown workload class {shown(text)[:64]!r} (one of {names})")


def run_of(job_id: str, run: str) -> str:
    """The id of the run a job's work belongs to: its declared run, else the job itself."""
    return run or job_id


def shown_account(account: str) -> str:
    """An account as shown to people: "(none)" when no account is known."""
    return shown(account) if account else NO_ACCOUNT_SHOWN


def label_problem(value: str, max_chars: int) -> str | None:
    """What is wrong with a run, account or run source someone gave, or None (empty is fine:
    not given)."""
    if not value:
        return None
    return identifier_problem(value, max_chars)


def declared_run_problem(run: str, max_chars: int) -> str | None:
    """What is wrong with a run a workload or a person declares, or None."""
    problem = label_problem(run, max_chars)
    if problem is None and cluster_of(run) is not None:
        return (
            "has the form of a job id (SCHEME:CLUSTER/...), which is kept for runs derived "
            "from jobs"
        )
    return problem


# A set of classes as an integer, one bit per class: what run and account totals keep (a run's
# records may declare several classes over time; OR-ing bit sets is exact in any order). Kept in
# databases: a class's bit is never changed or reused.
CLASS_BIT = {
    WorkloadClass.UNKNOWN: 1 << 0,
    WorkloadClass.PRETRAINING: 1 << 1,
    WorkloadClass.FINE_TUNING: 1 << 2,
    WorkloadClass.REINFORCEMENT_LEARNING: 1 << 3,
    WorkloadClass.SYNTHETIC_DATA: 1 << 4,
    WorkloadClass.EVALUATION: 1 << 5,
    WorkloadClass.INFERENCE: 1 << 6,
}


def classes_in(bits: int) -> tuple[WorkloadClass, ...]:
    """The classes of a bit set (`CLASS_BIT`), in declaration order; bits no class has are
    ignored."""
    return tuple(c for c, bit in CLASS_BIT.items() if bits & bit)
