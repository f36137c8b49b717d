"""`flopwatch job start|end|list`: register jobs with the agent on this node.

For schedulers' hooks (a Slurm prolog and epilog) and for people. The agent namespaces the id
("slurm:CLUSTER/123"), keeps the registration across restarts and attributes the work of the
job's GPUs to it from the moment it starts until it ends.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_OK, check_identifier
from flopwatch.model import Precision
from flopwatch.runs import WorkloadClass

if TYPE_CHECKING:
    from flopwatch.v1.agent_control_pb2 import RegisteredJob

HELP = (
    "register a job's start or end with the agent on THIS node (scheduler hooks, by hand); "
    "totals across nodes: `flopwatch jobs`"
)
DEFAULT_SOCKET = Path("/run/flopwatch/agent.sock")
# The agent reads its --control-socket from this variable too, so one setting serves both.
SOCKET_VARIABLE = "FLOPWATCH_AGENT_CONTROL_SOCKET"
PRECISIONS = [p.value for p in Precision if p is not Precision.UNSPECIFIED]
CLASSES = [c.value for c in WorkloadClass]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        type=Path,
        default=Path(os.environ.get(SOCKET_VARIABLE) or DEFAULT_SOCKET),
        help=f"the agent's control socket (its --control-socket; default: ${SOCKET_VARIABLE} "
        f"if set, else {DEFAULT_SOCKET})",
    )
    p.add_argument("--json", action="store_true", help="print the registration as JSON")


def _job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--job",
        required=True,
        help="the scheduler's job id: a number for Slurm (SLURM_JOB_ID), NAMESPACE/POD for "
        "Kubernetes, any name without spaces by hand",
    )
    p.add_argument(
        "--source",
        choices=["manual", "slurm", "kubernetes"],
        default="manual",
        help="who names the job; the agent records it as SOURCE:CLUSTER/JOB, with "
        "SOURCE k8s for kubernetes (default: %(default)s)",
    )
    _common(p)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("job", help=HELP, description=HELP + ".")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser(
        "start",
        help="the job runs from now on",
        description="Register a job as running from now. Its GPUs' work is attributed to it "
        "(a process that another source, such as Slurm, names for another job keeps its own "
        "work). Repeating an identical start is harmless.",
    )
    _job_arguments(start)
    start.add_argument(
        "--gpus",
        default="",
        metavar="0,1|GPU-UUID,...|all",
        help="GPUs the job holds: NVML indices, GPU or MIG UUIDs, or all. Without it the job "
        "claims no GPU and only declares its precision for work other sources find for it "
        "(its Slurm processes, its pod)",
    )
    start.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="declared precision of the job's matrix work: the FLOPs estimate uses it (bf16 "
        "if not declared); the upper bound never depends on it",
    )
    start.add_argument(
        "--run",
        dest="run_name",
        default="",
        metavar="RUN",
        help="the run (training run or other workload) whose compute the job adds to, e.g. "
        "llama-405b-pretrain; overrides what the job's processes declare. Default: what other "
        "sources find, else the job is a run of its own",
    )
    start.add_argument(
        "--parent",
        dest="run_parent",
        default="",
        metavar="PARENT",
        help="the run the job's run derives from (a fine-tuning's pretraining run), a run of the "
        "same account; needs --run. The collector declares the lineage from the job's records "
        "unless the run has one already (`flopwatch runs declare` wins)",
    )
    start.add_argument(
        "--class",
        dest="workload_class",
        choices=CLASSES,
        help="what the run does; overrides what the job's processes declare (default: theirs, "
        "else unknown)",
    )
    start.add_argument(
        "--account",
        default="",
        help="who is accountable for the job (a customer, a developer): the operator's word, "
        "which is why only the control socket's users (the agent's group) can give it. "
        "Default: the scheduler's account (mapped by the agent's --account-map), else the "
        "agent's --default-account",
    )
    start.set_defaults(run=run_start)

    end = actions.add_parser(
        "end", help="the job ended now", description="Register that a job ended now."
    )
    _job_arguments(end)
    end.set_defaults(run=run_end)

    listing = actions.add_parser(
        "list",
        help="jobs the agent holds",
        description="Jobs registered with the agent: running, and ended within the last hour.",
    )
    _common(listing)
    listing.set_defaults(run=run_list)


def _class(job: RegisteredJob) -> str:
    from flopwatch.attestation import WORKLOAD_CLASS_FROM_PROTO

    found = WORKLOAD_CLASS_FROM_PROTO.get(job.workload_class, WorkloadClass.UNKNOWN)
    return found.value


def _describe(job: RegisteredJob) -> dict[str, object]:
    from flopwatch.attestation import PRECISION_FROM_PROTO

    return {
        "job_id": job.job_id,
        "source": job.source,
        "gpus": list(job.gpu_uuids),
        "precision": PRECISION_FROM_PROTO[job.precision].value,
        "run": job.run or None,
        "account": job.account or None,
        "class": _class(job),
        "parent": job.run_parent or None,
        "start_unix_s": job.start_unix_ns / 1e9,
        "end_unix_s": job.end_unix_ns / 1e9 if job.end_unix_ns else None,
    }


def _line(job: RegisteredJob) -> str:
    from flopwatch.attestation import PRECISION_FROM_PROTO
    from flopwatch.identifiers import shown
    from flopwatch.runs import shown_account

    gpus = ",".join(job.gpu_uuids) or "none (declares only)"
    state = "ended" if job.end_unix_ns else "running"
    precision = PRECISION_FROM_PROTO[job.precision].value
    run = shown(job.run) if job.run else "(not declared)"
    return (
        f"{shown(job.job_id)}  {state}  GPUs: {gpus}  precision: {precision}  run: {run}  "
        f"account: {shown_account(job.account)}  class: {_class(job)}"
        + (f"  parent: {shown(job.run_parent)}" if job.run_parent else "")
    )


def _print(jobs: list[RegisteredJob], as_json: bool, single: bool) -> None:
    if as_json:
        out: object = _describe(jobs[0]) if single else {"jobs": [_describe(j) for j in jobs]}
        print(json.dumps(out, indent=1))
        return
    for j in jobs:
        print(_line(j))


def run_start(args: argparse.Namespace) -> int:
    from flopwatch.agent.control.client import ControlClient

    precision = Precision.parse(args.precision)
    gpus = [g for g in args.gpus.split(",") if g.strip()]
    check_identifier("--job", args.job)
    with ControlClient(args.socket) as client:
        job = client.start(
            args.job,
            source=args.source,
            gpus=gpus,
            precision=precision,
            run=args.run_name,
            account=args.account,
            workload_class=WorkloadClass.parse(args.workload_class),
            run_parent=args.run_parent,
        )
    _print([job], args.json, single=True)
    return EXIT_OK


def run_end(args: argparse.Namespace) -> int:
    from flopwatch.agent.control.client import ControlClient

    check_identifier("--job", args.job)
    with ControlClient(args.socket) as client:
        job = client.end(args.job, source=args.source)
    _print([job], args.json, single=True)
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    from flopwatch.agent.control.client import ControlClient

    with ControlClient(args.socket) as client:
        jobs = client.list()
    _print(jobs, args.json, single=False)
    return EXIT_OK
