"""Kubernetes: a GPU belongs to the pod the kubelet assigned it to; the API server says the
pod's run, and its namespace the account.

1. The kubelet's PodResources API (podresources.py) says which pod holds which GPU: a GPU claim
   (flopwatch.attribution) for "k8s:CLUSTER/NAMESPACE/POD" over all work on that GPU. The agent
   asks every `refresh_s` seconds, so a pod's start and end are known to about that resolution.
   While the kubelet does not answer, no pod holds a GPU: the work is still counted, under the
   node's unattributed job, and the failures are logged and counted (agent metrics).
2. /proc/PID/cgroup names the pod (by UID only) of a process running inside one: a weak process
   claim. The API server's pods (kubemeta.py) join the UID to the pod's namespace and name, so
   the claim is for "k8s:CLUSTER/NAMESPACE/POD" like the pod's GPU claims; a UID the API server
   has not described stays "k8s:CLUSTER/uid:POD_UID". The weak claim yields to the GPU claim and
   names only the work of pod processes on a GPU no pod was assigned.
3. Run, class and declared precision come from the pod's metadata (`KubeDirectory`: a label or
   annotation, else the top controller, else none: the pod is a run of its own); the account
   from the namespace (its admin's account label, else its name), through the operator's
   `--account-map`, never from the pod.

Fallback: where the API server has not described the pod (it is down, or the pod is newer than
its last answer), its controllers could not be read, or its namespace is unknown, the pod is a
run of its own with its namespace as account, and its windows name the source
FALLBACK_SOURCE ("kubernetes-fallback", signed into the record as the share's source) and are
counted (flopwatch_agent_k8s_fallback_windows_total). Without the API (`--k8s-api off`) every
pod is a run of its own in its namespace's account, source "kubernetes".
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Collection, Sequence

from flopwatch.agent.attribution.kubemeta import KubeDirectory, KubeStatus, PodFacts
from flopwatch.agent.attribution.labels import AccountMap
from flopwatch.agent.attribution.podresources import PodGpu, PodResourcesClient
from flopwatch.agent.attribution.procfs import PidCache, ProcFs
from flopwatch.agent.backends.base import GpuInfo
from flopwatch.attribution import JobWindow
from flopwatch.job_ids import k8s_job_id, k8s_uid_job_id
from flopwatch.model import Precision
from flopwatch.runs import WorkloadClass

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


SOURCE = "kubernetes"
FALLBACK_SOURCE = "kubernetes-fallback"


class KubernetesSource:
    """GPU claims from the kubelet, weak process claims from pods' cgroups, labelled from the
    API server's metadata."""

    name = SOURCE

    def __init__(
        self,
        cluster: str,
        client: PodResourcesClient,
        proc: ProcFs | None,
        gpus: Sequence[GpuInfo],
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        directory: KubeDirectory | None = None,
        accounts: AccountMap | None = None,
    ) -> None:
        self._cluster = cluster
        self._client = client
        self._by_index = {str(g.index): g.uuid for g in gpus if not g.mig_instance}
        self._refresh_s = refresh_s
        self._clock = clock
        self._claims: list[tuple[str, str, str, str]] = []  # namespace, pod, job id, GPU
        self._tried_at: float | None = None
        self._uids: PidCache[str] | None = None
        if proc is not None:
            self._uids = PidCache(proc, lambda pid: pod_uid_from_cgroups(proc.cgroups(pid) or []))
        self.directory = directory
        self._accounts = accounts if accounts is not None else AccountMap({})
        self.fallback_windows = 0  # windows labelled without the API server's metadata

    def _gpu_claim(self, a: PodGpu) -> tuple[str, str, str, str]:
        uuid = self._by_index.get(a.device_id, a.device_id)  # DEVICE_ID_STRATEGY=index
        return a.namespace, a.pod, k8s_job_id(self._cluster, a.namespace, a.pod), uuid

    def _refresh(self) -> None:
        now = self._clock()
        if self._tried_at is not None and now - self._tried_at < self._refresh_s:
            return
        self._tried_at = now
        self._claims = []
        assignments = self._client.list_gpus()
        self._claims = sorted({self._gpu_claim(a) for a in assignments})

    def _window(
        self,
        job_id: str,
        namespace: str | None,
        facts: PodFacts | None,
        *,
        pid: int | None = None,
        gpu: str | None = None,
    ) -> JobWindow:
        """A pod's window with its run, account, class and precision."""
        d = self.directory
        account_name = namespace
        source = SOURCE
        if d is not None:
            known = d.account_of(namespace) if namespace is not None else None
            if facts is None or not facts.resolved or known is None:
                source = FALLBACK_SOURCE
                self.fallback_windows += 1
            account_name = known if known is not None else namespace
        run = facts.run if facts is not None and facts.resolved else ""
        return JobWindow(
            job_id,
            pid=pid,
            start_ns=0,
            gpu=gpu,
            weak=pid is not None,
            source=source,
            precision=facts.precision if facts is not None else Precision.UNSPECIFIED,
            run=run,
            run_source=facts.run_source if run and facts is not None else "",
            account=self._accounts.of(account_name or ""),
            workload_class=facts.workload_class if facts is not None else WorkloadClass.UNKNOWN,
            run_parent=facts.run_parent if facts is not None and facts.resolved else "",
        )

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        d = self.directory
        weak = []
        if self._uids is not None:
            for pid, uid in sorted(self._uids.lookup(pids).items()):
                facts = d.pod(uid) if d is not None else None
                if facts is None:
                    weak.append(
                        self._window(k8s_uid_job_id(self._cluster, uid), None, None, pid=pid)
                    )
                    continue
                job = k8s_job_id(self._cluster, facts.namespace, facts.name)
                weak.append(self._window(job, facts.namespace, facts, pid=pid))
        self._refresh()  # raises TransportError when the kubelet does not answer
        claims = [
            self._window(job, namespace, d.pod_named(namespace, pod) if d else None, gpu=gpu)
            for namespace, pod, job, gpu in self._claims
        ]
        return claims + weak

    def status(self) -> KubeStatus | None:
        """The API server's side, for the agent's metrics; None without it."""
        if self.directory is None:
            return None
        return dataclasses.replace(self.directory.status(), fallback_windows=self.fallback_windows)

    def close(self) -> None:
        if self.directory is not None:
            self.directory.close()
        self._client.close()
