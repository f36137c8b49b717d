"""What a job's records say beside its totals: how its figures were measured, and whose work
it was. Read from the attestations (verified ones, when a verifier asks). Pure.

Each attribution (JobShare) names a job and, where the records carry them, its run, account and
workload class. Records from before runs existed carry none and read as the rule for an
undeclared run says (flopwatch/runs.py, DESIGN.md "Jobs, runs, accounts"): the job is a run of
its own, no account is known, the class is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flopwatch.attestation import METHOD_FROM_PROTO, WORKLOAD_CLASS_FROM_PROTO
from flopwatch.runs import WorkloadClass, run_of
from flopwatch.v1 import attestation_pb2 as pb


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


def labels_of(share: pb.JobShare) -> Labels:
    """The labels one attribution was signed with; an undeclared run is the job's own."""
    kind = WORKLOAD_CLASS_FROM_PROTO.get(share.workload_class, WorkloadClass.UNKNOWN)
    return Labels(run_of(share.job_id, share.run), share.account, kind.value)


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


class ScopeFacts:
    """What the records of a job or a run say beside its totals, gathered one record at a time:
    the methods, the labels and the time window of the GPU intervals with work of the scope
    (the shares `counts` picks). What a statement about a sampled report states, and what its
    verifier checks each opened record against."""

    def __init__(self, counts: Callable[[pb.JobShare], bool]) -> None:
        self._counts = counts
        self.methods: set[str] = set()
        self.labels: set[Labels] = set()
        self.first_start_ns: int | None = None
        self.last_end_ns: int | None = None

    def add(self, att: pb.Attestation) -> None:
        for iv in att.intervals:
            shares = [s for s in iv.jobs if self._counts(s)]
            if not shares:
                continue
            method = METHOD_FROM_PROTO.get(iv.method)
            self.methods.add(method.value if method is not None else "unspecified")
            self.labels.update(labels_of(s) for s in shares)
            start, end = iv.start_unix_ns, iv.end_unix_ns
            if self.first_start_ns is None or start < self.first_start_ns:
                self.first_start_ns = start
            if self.last_end_ns is None or end > self.last_end_ns:
                self.last_end_ns = end

    @property
    def classes(self) -> tuple[str, ...]:
        """The workload classes the records declared, sorted, distinct."""
        return tuple(sorted({x.workload_class for x in self.labels}))
