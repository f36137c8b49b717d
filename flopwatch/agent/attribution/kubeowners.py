"""Kubernetes object metadata as the agent keeps it, and a pod's top controller.

A pod names the object that controls it in `metadata.ownerReferences` (the one entry with
`controller: true`), and that object may have a controller of its own. The agent follows these
references up through the kinds it knows and takes the topmost one that is a workload of its
own (`ControllerKind.run`) as the pod's run. The real chains:

  Pod -> Job                                            batch Job
  Pod -> Job -> JobSet                                  JobSet (jobset.x-k8s.io)
  Pod -> Job -> JobSet -> TrainJob                      Kubeflow Trainer v2 (trainer.kubeflow.org)
  Pod -> PyTorchJob (also TFJob, MPIJob, JAXJob, XGBoostJob, PaddleJob)  Kubeflow (kubeflow.org)
  Pod -> Job -> MPIJob                                  the launcher of an MPIJob v2beta1
  Pod -> StatefulSet -> LeaderWorkerSet                 a LeaderWorkerSet's leader
  Pod -> StatefulSet -> Pod -> StatefulSet -> LeaderWorkerSet   its workers: their StatefulSet
                                                        is controlled by the group's leader pod
  Pod -> RayCluster -> RayJob                           a RayJob's head and workers (ray.io)
  Pod -> Job -> RayJob                                  a RayJob's submitter
  Pod -> RayCluster                                     a RayCluster of its own (or a RayService's)

The walk stops at a kind it does not know (a CronJob above a Job: each run of a CronJob is a
Job, a run of its own; a ReplicaSet; anything else), at a reference whose object is gone (404)
or another object by now (its UID differs), and after MAX_OWNER_DEPTH steps. Only objects
whose controller may be a known kind are read (GET by name, metadata only): Jobs, JobSets,
RayClusters, StatefulSets and Pods. The kinds on top (TrainJob, the kubeflow.org jobs,
LeaderWorkerSet, RayJob) are taken from the reference alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from flopwatch.agent.attribution.kubeapi import ApiError

MAX_OWNER_DEPTH = 8  # controller references followed from a pod
MAX_NAME_CHARS = 253  # a Kubernetes name (DNS subdomain); longer is not an object's name
MAX_VALUE_CHARS = 1024  # a label or annotation value kept (longer ones: their start, refused)


@dataclass(frozen=True)
class ControllerKind:
    group: str  # "" for the core group
    kind: str
    plural: str  # the resource in API paths
    run: bool  # a workload of its own: the pod's run when it is the topmost known controller
    read: bool  # whether its own controller may be a known kind (then it is read)


KINDS: Mapping[tuple[str, str], ControllerKind] = {
    (k.group, k.kind): k
    for k in (
        ControllerKind("batch", "Job", "jobs", run=True, read=True),
        ControllerKind("jobset.x-k8s.io", "JobSet", "jobsets", run=True, read=True),
        ControllerKind("trainer.kubeflow.org", "TrainJob", "trainjobs", run=True, read=False),
        ControllerKind("kubeflow.org", "PyTorchJob", "pytorchjobs", run=True, read=False),
        ControllerKind("kubeflow.org", "TFJob", "tfjobs", run=True, read=False),
        ControllerKind("kubeflow.org", "MPIJob", "mpijobs", run=True, read=False),
        ControllerKind("kubeflow.org", "JAXJob", "jaxjobs", run=True, read=False),
        ControllerKind("kubeflow.org", "XGBoostJob", "xgboostjobs", run=True, read=False),
        ControllerKind("kubeflow.org", "PaddleJob", "paddlejobs", run=True, read=False),
        ControllerKind(
            "leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets", run=True, read=False
        ),
        ControllerKind("ray.io", "RayJob", "rayjobs", run=True, read=False),
        ControllerKind("ray.io", "RayCluster", "rayclusters", run=True, read=True),
        ControllerKind("apps", "StatefulSet", "statefulsets", run=False, read=True),
        ControllerKind("", "Pod", "pods", run=False, read=True),
    )
}


@dataclass(frozen=True)
class OwnerRef:
    """A controller reference (metadata.ownerReferences[] with controller: true)."""

    api_version: str  # "batch/v1", "v1"
    kind: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def known(self) -> ControllerKind | None:
        return KINDS.get((self.group, self.kind))


@dataclass(frozen=True)
class ObjectMeta:
    """What the agent keeps of an object's metadata."""

    namespace: str
    name: str
    uid: str
    controller: OwnerRef | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # only the keys asked for
    annotations: Mapping[str, str] = field(default_factory=dict)  # only the keys asked for


def _name(value: object, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise ApiError(f"an object's {what} is not a name: {str(value)[:80]!r}")
    return value


def _kept(values: object, keys: Collection[str], what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ApiError(f"an object's {what} are not a map")
    out = {}
    for key in keys:
        value = values.get(key)
        if isinstance(value, str):
            out[key] = value[: MAX_VALUE_CHARS + 1]  # longer still fails the identifier rule
    return out


def _controller(refs: object) -> OwnerRef | None:
    if refs is None:
        return None
    if not isinstance(refs, list):
        raise ApiError("an object's ownerReferences are not a list")
    for ref in refs:
        if not isinstance(ref, dict) or ref.get("controller") is not True:
            continue
        version = ref.get("apiVersion")
        if not isinstance(version, str) or not 0 < len(version) <= MAX_NAME_CHARS:
            raise ApiError("a controller reference without apiVersion")
        return OwnerRef(
            version,
            _name(ref.get("kind"), "controller's kind"),
            _name(ref.get("name"), "controller's name"),
            _name(ref.get("uid"), "controller's uid"),
        )
    return None


def object_meta(
    obj: Mapping[str, Any],
    *,
    labels: Collection[str] = (),
    annotations: Collection[str] = (),
    namespaced: bool = True,
) -> ObjectMeta:
    """The metadata of an API object (full, or PartialObjectMetadata); ApiError when it is not
    shaped as the API documents."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ApiError("an object without metadata")
    return ObjectMeta(
        namespace=_name(meta.get("namespace"), "namespace", required=namespaced),
        name=_name(meta.get("name"), "name"),
        uid=_name(meta.get("uid"), "uid"),
        controller=_controller(meta.get("ownerReferences")),
        labels=_kept(meta.get("labels"), labels, "labels"),
        annotations=_kept(meta.get("annotations"), annotations, "annotations"),
    )


def owner_path(namespace: str, ref: OwnerRef, kind: ControllerKind) -> str:
    """The API path of a controller, by name in the pod's namespace."""
    base = f"/api/{ref.version}" if not kind.group else f"/apis/{ref.api_version}"
    return f"{base}/namespaces/{quote(namespace, safe='')}/{kind.plural}/{quote(ref.name, safe='')}"


Fetch = Callable[[ControllerKind, OwnerRef], ObjectMeta | None]


def top_controller(first: OwnerRef | None, fetch: Fetch) -> OwnerRef | None:
    """The topmost controller of a known run kind above a pod whose controller is `first`, or
    None. `fetch` reads an object's metadata: None where it is gone or may not be read (the
    walk stops there); it raises ApiError where the server cannot answer now (the chain is then
    unknown: the caller tries again later)."""
    top = None
    ref = first
    seen: set[str] = set()
    for _ in range(MAX_OWNER_DEPTH):
        kind = ref.known() if ref is not None else None
        if ref is None or kind is None:
            break
        if kind.run:
            top = ref
        if not kind.read or ref.uid in seen:
            break
        seen.add(ref.uid)
        meta = fetch(kind, ref)
        if meta is None or meta.uid != ref.uid:
            break  # gone, or replaced by another object of the same name
        ref = meta.controller
    return top
