"""Cluster-namespaced job ids, so that two sites never collide. Pure.

    slurm:{cluster}/{job}                 a Slurm job (SLURM_JOB_ID)
    k8s:{cluster}/{namespace}/{pod}       a Kubernetes pod
    k8s:{cluster}/uid:{pod_uid}           a pod known only by its UID (from /proc/PID/cgroup)
    k8s:{cluster}/{namespace}/{kind}/{name}  a pod's top controller (a JobSet, a PyTorchJob):
                                          the name of a run (flopwatch/runs.py), never a job
    manual:{cluster}/{job}                a job given to the agent by hand (`flopwatch job start`)
    unattributed:{cluster}/{node}         work on a node that no job claimed

Ids from a JOBS.json file (replay, demo, calibration) are kept exactly as written. A verifier
can check that a namespaced id names the cluster of the record that carries it
(`cluster_of`); ids of other shapes are not namespaced and carry no cluster.
"""

from __future__ import annotations

import re

from flopwatch.errors import ConfigError

SCHEMES = ("slurm", "k8s", "manual", "unattributed")
_CLUSTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NAMESPACED_RE = re.compile(r"(slurm|k8s|manual|unattributed):([^/]*)/.+", re.DOTALL)
_TEXT_RE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


def check_cluster(cluster: str) -> str:
    """A cluster name: letters, digits, '.', '_' and '-', at most 63 characters."""
    if not _CLUSTER_RE.fullmatch(cluster):
        raise ConfigError(
            f"cluster name {cluster!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return cluster


def check_job_text(job: str, what: str = "job") -> str:
    """A scheduler's own job name: 1-128 printable ASCII characters, no spaces."""
    if not _TEXT_RE.fullmatch(job):
        raise ConfigError(f"{what} {job!r} must be 1-128 printable ASCII characters, no spaces")
    return job


def slurm_job_id(cluster: str, job: str) -> str:
    return f"slurm:{cluster}/{job}"


def k8s_job_id(cluster: str, namespace: str, pod: str) -> str:
    return f"k8s:{cluster}/{namespace}/{pod}"


def k8s_controller_run(cluster: str, namespace: str, kind: str, name: str) -> str:
    """The run of the pods under one controller. A pod's name holds no '/', so this never
    reads as a pod's job id."""
    return f"k8s:{cluster}/{namespace}/{kind}/{name}"


def k8s_uid_job_id(cluster: str, pod_uid: str) -> str:
    """A pod known by UID only. Namespaces are DNS labels, so 'uid:' cannot be one."""
    return f"k8s:{cluster}/uid:{pod_uid}"


def manual_job_id(cluster: str, job: str) -> str:
    return f"manual:{cluster}/{job}"


def unattributed_job_id(cluster: str, node_id: str) -> str:
    return f"unattributed:{cluster}/{node_id}"


def cluster_of(job_id: str) -> str | None:
    """The cluster a namespaced job id names, or None for an id that is not namespaced."""
    m = _NAMESPACED_RE.fullmatch(job_id)
    return m.group(2) if m else None
