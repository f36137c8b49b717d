"""Kubernetes: a GPU belongs to the pod the kubelet assigned it to.

1. The kubelet's PodResources API (podresources.py) says which pod holds which GPU: a GPU claim
   (flopwatch.attribution) for "k8s:CLUSTER/NAMESPACE/POD" over all work on that GPU. The agent
   asks every `refresh_s` seconds, so a pod's start and end are known to about that resolution.
   While the kubelet does not answer, no pod holds a GPU: the work is still counted, under the
   node's unattributed job, and the failures are logged and counted (agent metrics).
2. /proc/PID/cgroup names the pod (by UID only) of a process running inside one: a weak process
   claim for "k8s:CLUSTER/uid:POD_UID". PodResources does not give pod UIDs, so the two cannot be
   joined; the weak claim yields to the GPU claim and names only the work of pod processes on a
   GPU no pod was assigned (a pod that reached a GPU it did not request).

Declared precision: the PodResources API carries no annotations and the agent does not read the
Kubernetes API. A pod's precision is declared on the node with
`flopwatch job start --source kubernetes --job NAMESPACE/POD --precision fp8`, which declares it
without claiming a GPU (see docs/agent.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Sequence

from flopwatch.agent.attribution.podresources import PodGpu, PodResourcesClient
from flopwatch.agent.attribution.procfs import PidCache, ProcFs
from flopwatch.agent.backends.base import GpuInfo
from flopwatch.attribution import JobWindow
from flopwatch.job_ids import k8s_job_id, k8s_uid_job_id

# kubepods/burstable/pod<uid>/...  or  kubepods-burstable-pod<uid with '_'>.slice/...
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)"
)


def pod_uid_from_cgroups(paths: Collection[str]) -> str | None:
    for path in paths:
        if "kubepods" not in path:
            continue
        m = _POD_UID.search(path)
        if m:
            return m.group(1).replace("_", "-")
    return None


class KubernetesSource:
    """GPU claims from the kubelet, weak process claims from pods' cgroups."""

    name = "kubernetes"

    def __init__(
        self,
        cluster: str,
        client: PodResourcesClient,
        proc: ProcFs | None,
        gpus: Sequence[GpuInfo],
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._client = client
        self._by_index = {str(g.index): g.uuid for g in gpus if not g.mig_instance}
        self._refresh_s = refresh_s
        self._clock = clock
        self._claims: list[JobWindow] = []
        self._tried_at: float | None = None
        self._uids: PidCache[str] | None = None
        if proc is not None:
            self._uids = PidCache(proc, lambda pid: pod_uid_from_cgroups(proc.cgroups(pid) or []))

    def _gpu_claim(self, a: PodGpu) -> JobWindow:
        uuid = self._by_index.get(a.device_id, a.device_id)  # DEVICE_ID_STRATEGY=index
        return JobWindow(
            k8s_job_id(self._cluster, a.namespace, a.pod),
            pid=None,
            start_ns=0,
            gpu=uuid,
            source=self.name,
        )

    def _refresh(self) -> None:
        now = self._clock()
        if self._tried_at is not None and now - self._tried_at < self._refresh_s:
            return
        self._tried_at = now
        self._claims = []
        assignments = self._client.list_gpus()
        claims = {self._gpu_claim(a) for a in assignments}
        self._claims = sorted(claims, key=lambda w: (w.job_id, w.gpu or ""))

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        weak = []
        if self._uids is not None:
            for pid, uid in sorted(self._uids.lookup(pids).items()):
                job = k8s_uid_job_id(self._cluster, uid)
                weak.append(JobWindow(job, pid=pid, start_ns=0, source=self.name, weak=True))
        self._refresh()  # raises TransportError when the kubelet does not answer
        return self._claims + weak

    def close(self) -> None:
        self._client.close()
