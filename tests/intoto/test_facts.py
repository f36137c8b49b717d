"""What a job's records say beside its totals: methods of its own intervals only, and its run,
account and class (a record without them: the job is its own run, no account, class unknown)."""

from __future__ import annotations

from flopwatch.intoto.facts import Labels, job_facts, labels_of
from flopwatch.v1 import attestation_pb2 as pb


def _interval(method: int, *jobs: str) -> pb.GpuInterval:
    return pb.GpuInterval(method=method, jobs=[pb.JobShare(job_id=j) for j in jobs])


def test_methods_are_those_of_the_jobs_own_intervals_sorted_once():
    a = pb.Attestation(
        intervals=[
            _interval(pb.METHOD_NVML_UTILIZATION, "j"),
            _interval(pb.METHOD_GPM, "j", "other"),
            _interval(pb.METHOD_UNKNOWN_RATE, "other"),  # not the job's
            _interval(pb.METHOD_GPM, "j"),
        ]
    )
    facts = job_facts([a, pb.Attestation(intervals=[_interval(pb.METHOD_GPM, "other")])], "j")
    assert facts.methods == ("gpm", "nvml-utilization")
    assert facts.labels == (Labels("j", "", "unknown"),)


def test_a_job_without_work_has_no_facts():
    facts = job_facts([pb.Attestation(intervals=[_interval(pb.METHOD_GPM, "other")])], "j")
    assert (facts.methods, facts.labels) == ((), ())


def test_a_share_without_run_fields_is_its_own_run():
    assert labels_of(pb.JobShare(job_id="slurm:c/9")) == Labels("slurm:c/9", "", "unknown")
