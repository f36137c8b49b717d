"""Cluster-namespaced job ids, and the verifier's check that a record's jobs name its cluster."""

from __future__ import annotations

import pytest

from flopwatch.errors import ConfigError, VerificationError
from flopwatch.job_ids import (
    check_cluster,
    cluster_of,
    k8s_job_id,
    k8s_uid_job_id,
    manual_job_id,
    slurm_job_id,
    unattributed_job_id,
)
from flopwatch.verify import RecordVerifier
from tests.nodes import Node


def test_ids_name_scheme_and_cluster() -> None:
    assert slurm_job_id("cluster-a", "123456") == "slurm:cluster-a/123456"
    assert k8s_job_id("c", "ml", "train-0") == "k8s:c/ml/train-0"
    assert k8s_uid_job_id("c", "0a-1b") == "k8s:c/uid:0a-1b"
    assert manual_job_id("c", "bench") == "manual:c/bench"
    assert unattributed_job_id("c", "node-1") == "unattributed:c/node-1"


@pytest.mark.parametrize(
    ("job_id", "cluster"),
    [
        ("slurm:cluster-a/123456", "cluster-a"),
        ("k8s:c/ml/train-0", "c"),
        ("unattributed:c/node-1", "c"),
        ("a1", None),  # JOBS.json ids are kept as written: not namespaced
        ("test:cluster/job-1", None),
        ("slurm:no-slash", None),
    ],
)
def test_cluster_of(job_id: str, cluster: str | None) -> None:
    assert cluster_of(job_id) == cluster


@pytest.mark.parametrize("bad", ["", "a/b", "a:b", "-x", "x" * 64, "has space"])
def test_cluster_names_that_would_break_the_namespace_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="cluster name"):
        check_cluster(bad)


def verify(job: str) -> None:
    node = Node(job=job)  # its records say cluster "c"
    RecordVerifier(trusted_keys={node.key_id: node.key.public_key}).verify_bytes(node.envelope())


def test_verifier_accepts_jobs_of_its_cluster_and_unnamespaced_ids() -> None:
    verify("slurm:c/1")
    verify("a1")


def test_verifier_refuses_a_job_of_another_cluster() -> None:
    with pytest.raises(VerificationError) as e:
        verify("slurm:other-site/1")
    assert e.value.reason == "cluster_mismatch"
