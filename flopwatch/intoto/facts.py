"""What a job's records say beside its totals: how its figures were measured, and whose work
it was. Read from the attestations (verified ones, when a verifier asks). Pure.

Each attribution (JobShare) names a job and, where the records carry them, its run, account and
workload class. Records from before runs existed carry none and read as the rule for an
undeclared run says (flopwatch/runs.py, DESIGN.md "Jobs, runs, accounts"): the job is a run of
its own, no account is known, the class is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flopwatch.attestation import METHOD_FROM_PROTO
from flopwatch.intoto.predicate import NO_CLASS
from flopwatch.v1 import attestation_pb2 as pb

_CLASS_PREFIX = "WORKLOAD_CLASS_"


@dataclass(frozen=True)
class Labels:
    """The run, account and workload class one attribution was signed with."""

    run: str
    account: str  # empty: none known
    workload_class: str


@dataclass(frozen=True)
class JobFacts:
    methods: tuple[str, ...]  # how the job's GPU intervals were measured: sorted, distinct
    labels: tuple[Labels, ...]  # each distinct labelling of the job's work, sorted


def _class_name(number: int) -> str:
    """A WorkloadClass enum value by its name in docs ("fine-tuning"); UNSPECIFIED or a value
    this build does not know is "unknown"."""
    field = pb.JobShare.DESCRIPTOR.fields_by_name.get("workload_class")
    kind = None if field is None else field.enum_type
    value = None if kind is None or not number else kind.values_by_number.get(number)
    if value is None:
        return NO_CLASS
    return value.name.removeprefix(_CLASS_PREFIX).lower().replace("_", "-")


def labels_of(share: pb.JobShare) -> Labels:
    # run, account and workload_class are JobShare fields 7-9; a build whose schema predates
    # them reads every record as one without them.
    run = str(getattr(share, "run", ""))
    account = str(getattr(share, "account", ""))
    return Labels(
        run or share.job_id, account, _class_name(int(getattr(share, "workload_class", 0)))
    )


def job_facts(attestations: Iterable[pb.Attestation], job_id: str) -> JobFacts:
    """The methods and labels of every GPU interval that holds work of `job_id`."""
    methods: set[str] = set()
    labels: set[Labels] = set()
    for a in attestations:
        for iv in a.intervals:
            shares = [s for s in iv.jobs if s.job_id == job_id]
            if not shares:
                continue
            method = METHOD_FROM_PROTO.get(iv.method)
            methods.add(method.value if method is not None else "unspecified")
            labels.update(labels_of(s) for s in shares)
    return JobFacts(
        tuple(sorted(methods)),
        tuple(sorted(labels, key=lambda x: (x.run, x.account, x.workload_class))),
    )
