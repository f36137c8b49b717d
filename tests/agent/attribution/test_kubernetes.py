"""Kubernetes attribution against a real gRPC server speaking the kubelet's PodResources API v1
on a unix socket, and pod UIDs from a fake /proc."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from flopwatch.agent.attribution.base import Attributor
from flopwatch.agent.attribution.kubernetes import KubernetesSource, pod_uid_from_cgroups
from flopwatch.agent.attribution.podresources import PodResourcesClient
from flopwatch.agent.attribution.procfs import ProcFs
from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.attribution import Claim, attribute
from flopwatch.errors import TransportError
from flopwatch.model.flops import PPM
from flopwatch.vendor.kubelet.podresources.v1 import api_pb2, api_pb2_grpc
from tests.agent.fake_proc import add_process

S = 10**9
UID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
GPUS = [
    GpuInfo(
        uuid=f"GPU-{i}", name="NVIDIA H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980, index=i
    )
    for i in range(3)
]


def pod(namespace: str, name: str, *devices: tuple[str, list[str]]) -> api_pb2.PodResources:
    return api_pb2.PodResources(
        namespace=namespace,
        name=name,
        containers=[
            api_pb2.ContainerResources(
                name="main",
                devices=[
                    api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devices
                ],
            )
        ],
    )


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []
        self.calls = 0

    def List(
        self, request: api_pb2.ListPodResourcesRequest, context: grpc.ServicerContext
    ) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[FakeKubelet, Path]]:
    fake = FakeKubelet()
    path = tmp_path / "kubelet.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(fake, server)
    assert server.add_insecure_port(f"unix:{path}") == 1
    server.start()
    yield fake, path
    server.stop(None)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def source_for(
    path: Path, proc_root: Path | None = None, clock: Clock | None = None
) -> KubernetesSource:
    return KubernetesSource(
        "cluster-a",
        PodResourcesClient(path, timeout_s=5),
        ProcFs(proc_root) if proc_root else None,
        GPUS,
        refresh_s=5.0,
        clock=clock or Clock(),
    )


def test_pods_holding_gpus_become_gpu_claims(kubelet: tuple[FakeKubelet, Path]) -> None:
    fake, path = kubelet
    fake.pods = [
        pod("ml", "train-0", ("nvidia.com/gpu", ["GPU-0", "GPU-1"]), ("example.com/nic", ["eth1"])),
        pod("ml", "infer-7", ("nvidia.com/gpu", ["GPU-2::3"])),  # a time-slicing replica
        pod("web", "nginx", ("cpu", ["1"])),
    ]
    source = source_for(path)
    windows = source.windows(set(), now_ns=S)
    assert sorted((w.job_id, w.gpu, w.claim) for w in windows) == [
        ("k8s:cluster-a/ml/infer-7", "GPU-2", Claim.GPU),
        ("k8s:cluster-a/ml/train-0", "GPU-0", Claim.GPU),
        ("k8s:cluster-a/ml/train-0", "GPU-1", Claim.GPU),
    ]
    out = attribute(S, 2 * S, [(4242, 1.0)], windows, gpu_ids=["GPU-1"])
    assert [(a.job_id, a.share_ppm, a.source) for a in out] == [
        ("k8s:cluster-a/ml/train-0", PPM, "kubernetes")
    ]
    source.close()


def test_index_device_ids_and_mig_resources_are_understood(
    kubelet: tuple[FakeKubelet, Path],
) -> None:
    fake, path = kubelet
    fake.pods = [
        pod("a", "p", ("nvidia.com/gpu", ["1"])),  # DEVICE_ID_STRATEGY=index
        pod("b", "q", ("nvidia.com/mig-1g.10gb", ["MIG-aaaa"])),
    ]
    windows = source_for(path).windows(set(), now_ns=S)
    assert sorted((w.job_id, w.gpu) for w in windows) == [
        ("k8s:cluster-a/a/p", "GPU-1"),
        ("k8s:cluster-a/b/q", "MIG-aaaa"),
    ]


def test_the_kubelet_is_asked_once_per_refresh_period_and_pods_come_and_go(
    kubelet: tuple[FakeKubelet, Path],
) -> None:
    fake, path = kubelet
    clock = Clock()
    source = source_for(path, clock=clock)
    fake.pods = [pod("ml", "a", ("nvidia.com/gpu", ["GPU-0"]))]
    assert [w.job_id for w in source.windows(set(), S)] == ["k8s:cluster-a/ml/a"]
    fake.pods = [pod("ml", "b", ("nvidia.com/gpu", ["GPU-0"]))]
    clock.t = 4.9
    assert [w.job_id for w in source.windows(set(), 2 * S)] == ["k8s:cluster-a/ml/a"]
    assert fake.calls == 1
    clock.t = 5.0
    assert [w.job_id for w in source.windows(set(), 3 * S)] == ["k8s:cluster-a/ml/b"]
    assert fake.calls == 2


@pytest.mark.parametrize(
    ("path", "uid"),
    [
        (f"/kubepods/burstable/pod{UID}/cri-containerd-1234", UID),
        (f"/kubepods/pod{UID}/abcdef", UID),
        (
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-99.scope",
            UID,
        ),
        (f"/system.slice/pod{UID}/x", None),  # not a kubepods cgroup
        ("/kubepods/burstable/podnotauid/x", None),
    ],
)
def test_pod_uid_from_cgroup_paths(path: str, uid: str | None) -> None:
    assert pod_uid_from_cgroups([path]) == uid


def test_pod_processes_are_weak_claims_that_yield_to_the_pod_holding_the_gpu(
    kubelet: tuple[FakeKubelet, Path], tmp_path: Path
) -> None:
    fake, path = kubelet
    proc = tmp_path / "proc"
    add_process(proc, 77, cgroups=[f"0::/kubepods/burstable/pod{UID}/c1"])
    fake.pods = [pod("ml", "holder", ("nvidia.com/gpu", ["GPU-0"]))]
    windows = source_for(path, proc).windows({77}, now_ns=S)
    weak = [w for w in windows if w.claim is Claim.CONTAINER]
    assert [(w.job_id, w.pid) for w in weak] == [(f"k8s:cluster-a/uid:{UID}", 77)]
    # on the GPU a pod holds, the holder gets the work; on another, the pod of the process
    on_held = attribute(S, 2 * S, [(77, 1.0)], windows, gpu_ids=["GPU-0"])
    on_free = attribute(S, 2 * S, [(77, 1.0)], windows, gpu_ids=["GPU-2"])
    assert [a.job_id for a in on_held] == ["k8s:cluster-a/ml/holder"]
    assert [a.job_id for a in on_free] == [f"k8s:cluster-a/uid:{UID}"]


def test_an_absent_kubelet_is_a_transport_error_and_the_attributor_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_for(tmp_path / "no-kubelet.sock")
    with pytest.raises(TransportError, match=r"kubelet PodResources API at .*UNAVAILABLE"):
        source.windows(set(), S)
    attributor = Attributor([source_for(tmp_path / "no-kubelet.sock")])
    reading = GpuReading(
        gpu=GPUS[0],
        start_ns=0,
        end_ns=S,
        pipe_busy=None,
        sm_clock_mhz_s=1.0,
        clock_samples=1,
        processes=(ProcessShare(1, 1.0),),
    )
    with caplog.at_level(logging.WARNING):
        assert attributor.windows([reading]) == []
    assert attributor.errors == {"kubernetes": 1}
    assert "attribution source kubernetes failed" in caplog.text
