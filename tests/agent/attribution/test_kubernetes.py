"""Kubernetes attribution against a real gRPC server speaking the kubelet's PodResources API v1
on a unix socket, pod UIDs from a fake /proc, and pods' runs and accounts from a loopback server
shaped like the Kubernetes API (tests/agent/attribution/fake_kube_api.py)."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flopwatch.agent.attribution.base import Attributor
from flopwatch.agent.attribution.kubeapi import ApiError, ApiSettings
from flopwatch.agent.attribution.kubemeta import KubeDirectory, KubeSettings
from flopwatch.agent.attribution.kubernetes import KubernetesSource, pod_uid_from_cgroups
from flopwatch.agent.attribution.labels import AccountMap
from flopwatch.agent.attribution.podresources import PodResourcesClient
from flopwatch.agent.attribution.procfs import ProcFs
from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.backends.sim import SimBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import Claim, attribute
from flopwatch.dsse import Envelope
from flopwatch.errors import TransportError
from flopwatch.keys import SigningKey
from flopwatch.model import Precision
from flopwatch.model.flops import PPM
from flopwatch.runs import WorkloadClass
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.vendor.kubelet.podresources.v1 import api_pb2, api_pb2_grpc
from flopwatch.verify import RecordVerifier
from tests.agent.agent_fakes import FakeCollector, running_agent, start_sync
from tests.agent.attribution.fake_kube_api import FakeKubeApi, serve, uid_of
from tests.agent.attribution.fake_kube_api import namespace as fake_namespace
from tests.agent.attribution.fake_kube_api import obj as fake_obj
from tests.agent.attribution.fake_kube_api import pod as fake_pod
from tests.agent.backends.tick_backend import TickBackend, wait_until
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


# -- runs and accounts from the API server (a loopback server shaped like the real API) -----


@pytest.fixture
def kube_api() -> Iterator[tuple[FakeKubeApi, str]]:
    api = FakeKubeApi()
    with serve(api) as url:
        yield api, url


def kube_directory(url: str) -> KubeDirectory:
    return KubeDirectory(ApiSettings(url, timeout_s=5), "cluster-a", KubeSettings(node="gpu-1"))


def llama_cluster(api: FakeKubeApi) -> dict[str, dict[str, object]]:
    """Namespace ml (account label "research"), a JobSet's pod on GPU-0, a bare pod on GPU-1,
    and a pod holding no GPU whose process runs on one."""
    jobset = fake_obj("jobset.x-k8s.io/v1alpha2", "JobSet", "llama")
    job = fake_obj("batch/v1", "Job", "llama-workers-0", owner=jobset)
    pods = {
        "llama-0": fake_pod(
            "llama-0",
            owner=job,
            labels={"flopwatch.dev/run-class": "pretraining"},
            annotations={"flopwatch.dev/precision": "fp8"},
        ),
        "solo": fake_pod("solo"),
        "stray": fake_pod("stray", labels={"flopwatch.dev/run": "side-quest"}),
    }
    api.add(
        fake_namespace("ml", {"flopwatch.dev/account": "research"}), jobset, job, *pods.values()
    )
    return pods  # type: ignore[return-value]


def labelled_source(path: Path, proc: Path, directory: KubeDirectory) -> KubernetesSource:
    return KubernetesSource(
        "cluster-a",
        PodResourcesClient(path, timeout_s=5),
        ProcFs(proc),
        GPUS,
        clock=Clock(),
        directory=directory,
        accounts=AccountMap({"research": "acme"}),
    )


def test_pods_carry_their_run_class_precision_and_their_namespaces_account(
    kubelet: tuple[FakeKubelet, Path], kube_api: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    fake, path = kubelet
    api, url = kube_api
    pods = llama_cluster(api)
    fake.pods = [
        pod("ml", "llama-0", ("nvidia.com/gpu", ["GPU-0"])),
        pod("ml", "solo", ("nvidia.com/gpu", ["GPU-1"])),
    ]
    proc = tmp_path / "proc"
    stray_uid = uid_of(pods["stray"])
    add_process(proc, 77, cgroups=[f"0::/kubepods/burstable/pod{stray_uid}/c1"])
    directory = kube_directory(url)
    directory.sync()
    source = labelled_source(path, proc, directory)
    windows = source.windows({77}, now_ns=S)
    got = {
        (w.job_id, w.claim): (
            w.run,
            w.run_source,
            w.account,
            w.workload_class,
            w.precision,
            w.source,
        )
        for w in windows
    }
    assert got == {
        ("k8s:cluster-a/ml/llama-0", Claim.GPU): (
            "k8s:cluster-a/ml/JobSet/llama", "controller", "acme", WorkloadClass.PRETRAINING,
            Precision.FP8, "kubernetes",
        ),
        ("k8s:cluster-a/ml/solo", Claim.GPU): (
            "", "", "acme", WorkloadClass.UNKNOWN, Precision.UNSPECIFIED, "kubernetes",
        ),
        # the cgroup's UID joined to the pod's name through the API server's pods
        ("k8s:cluster-a/ml/stray", Claim.CONTAINER): (
            "side-quest", "pod-label", "acme", WorkloadClass.UNKNOWN, Precision.UNSPECIFIED,
            "kubernetes",
        ),
    }  # fmt: skip
    assert source.fallback_windows == 0
    # The attributor lets the derived run through (a job id's form, naming this cluster).
    attributor = Attributor([source])
    checked = attributor.windows([reading_on(GPUS[0], 77)])
    assert {w.run for w in checked} == {"k8s:cluster-a/ml/JobSet/llama", "", "side-quest"}
    assert attributor.refusals.snapshot() == {}
    out = attribute(S, 2 * S, [(4242, 1.0)], checked, gpu_ids=["GPU-0"])
    assert [(a.job_id, a.run_id, a.account) for a in out] == [
        ("k8s:cluster-a/ml/llama-0", "k8s:cluster-a/ml/JobSet/llama", "acme")
    ]
    status = source.status()
    assert status is not None and status.api_up and status.pods_cached == 3


def test_without_the_api_servers_word_pods_fall_back_and_say_so(
    kubelet: tuple[FakeKubelet, Path], kube_api: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    fake, path = kubelet
    api, url = kube_api
    pods = llama_cluster(api)
    fake.pods = [pod("ml", "llama-0", ("nvidia.com/gpu", ["GPU-0"]))]
    proc = tmp_path / "proc"
    add_process(proc, 77, cgroups=[f"0::/kubepods/burstable/pod{uid_of(pods['stray'])}/c1"])
    directory = kube_directory(url)
    source = labelled_source(path, proc, directory)
    api.refuse = True  # the API server is down from the start
    with pytest.raises(ApiError):
        directory.sync()
    windows = source.windows({77}, now_ns=S)
    assert sorted((w.job_id, w.run, w.account, w.source) for w in windows) == [
        # run = the pod, account = its namespace (mapped), and the record says so
        ("k8s:cluster-a/ml/llama-0", "", "ml", "kubernetes-fallback"),
        (f"k8s:cluster-a/uid:{uid_of(pods['stray'])}", "", "", "kubernetes-fallback"),
    ]
    status = source.status()
    assert status is not None
    assert (status.api_up, status.fallback_windows, status.api_errors) == (False, 2, 1)
    api.refuse = False  # back: the real values
    directory.sync()
    windows = source.windows({77}, now_ns=2 * S)
    assert sorted((w.job_id, w.run, w.account, w.source) for w in windows) == [
        ("k8s:cluster-a/ml/llama-0", "k8s:cluster-a/ml/JobSet/llama", "acme", "kubernetes"),
        ("k8s:cluster-a/ml/stray", "side-quest", "acme", "kubernetes"),
    ]
    assert source.status().api_up  # type: ignore[union-attr]
    assert source.fallback_windows == 2


def test_without_the_api_pods_are_runs_of_their_own_in_their_namespaces_account(
    kubelet: tuple[FakeKubelet, Path],
) -> None:
    fake, path = kubelet
    fake.pods = [pod("team-b", "p", ("nvidia.com/gpu", ["GPU-0"]))]
    source = KubernetesSource(
        "cluster-a", PodResourcesClient(path), None, GPUS, accounts=AccountMap({"team-b": "b"})
    )
    [w] = source.windows(set(), S)
    assert (w.run, w.account, w.source) == ("", "b", "kubernetes") and source.status() is None


def reading_on(gpu: GpuInfo, pid: int) -> GpuReading:
    return GpuReading(
        gpu=gpu,
        start_ns=S,
        end_ns=2 * S,
        pipe_busy=None,
        sm_clock_mhz_s=1.0,
        clock_samples=1,
        processes=(ProcessShare(pid, 1.0),),
    )


def test_a_record_from_a_pod_carries_its_run_and_account_signed_and_verified(
    kubelet: tuple[FakeKubelet, Path], kube_api: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    """End to end on the node: kubelet and API server doubles -> the Kubernetes source -> the
    attributor -> a signed record -> the collector's verifier."""
    fake, path = kubelet
    api, url = kube_api
    llama_cluster(api)
    start = 1_700_000_000 * S
    readings = SimBackend(1, seed=3, start_ns=start).next_readings()
    assert readings is not None
    gpu = readings[0].gpu
    fake.pods = [pod("ml", "llama-0", ("nvidia.com/gpu", [gpu.uuid]))]
    directory = kube_directory(url)
    directory.sync()
    source = KubernetesSource(
        "cluster-a",
        PodResourcesClient(path),
        None,
        [gpu],
        directory=directory,
        accounts=AccountMap({"research": "acme"}),
    )
    attributor = Attributor([source], default_account="lab")
    key = SigningKey.generate()
    builder = RecordBuilder(
        node_id="gpu-1", cluster="cluster-a", signer=key, head=ChainHead(), now_ns=lambda: start
    )
    envelope = builder.build(readings, attributor.windows(readings))
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    record = verifier.verify_bytes(envelope.to_bytes())
    [share] = [j for iv in record.attestation.intervals for j in iv.jobs]
    assert (share.job_id, share.source) == ("k8s:cluster-a/ml/llama-0", "kubernetes")
    assert (share.run, share.run_source, share.account) == (
        "k8s:cluster-a/ml/JobSet/llama",
        "controller",
        "acme",
    )
    assert share.workload_class == pb.WORKLOAD_CLASS_PRETRAINING
    assert share.declared_precision == pb.PRECISION_FP8


def test_a_running_agent_signs_a_pods_run_and_account_and_shows_the_api_in_its_metrics(
    kubelet: tuple[FakeKubelet, Path], kube_api: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    """The agent as configured (`--attribution kubernetes --k8s-api URL`): its background
    threads read the API server, the records it sends carry the pod's run and account, and
    /metrics shows the API server's state."""
    fake, path = kubelet
    api, url = kube_api
    api.hold_watches = True  # watches wait for events, as the real server's do
    llama_cluster(api)
    fake.pods = [pod("ml", "llama-0", ("nvidia.com/gpu", ["GPU-tick-0"]))]
    collector = FakeCollector()
    server, port = start_sync(collector)
    config = AgentConfig(
        collector=f"127.0.0.1:{port}",
        backend="tick",
        state_dir=tmp_path / "state",
        node_id="gpu-1",
        cluster="cluster-a",
        insecure=True,
        attribution="kubernetes",
        proc_root=tmp_path / "no-proc",
        podresources_socket=path,
        k8s_api=url,
        account_map={"research": "acme"},
        metrics_listen="127.0.0.1:0",
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
    )
    backend = TickBackend()
    try:
        with running_agent(config, backend) as agent:
            assert agent.metrics_port

            def cached() -> bool:
                k = agent.snapshot().kubernetes
                return k is not None and k.pods_cached == 3 and k.api_up

            wait_until(cached, "the agent's threads to read the API server")
            backend.tick((ProcessShare(1, 1.0),))
            wait_until(lambda: len(collector.held) == 1, "the record acknowledged")
            metrics_url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
            metrics = urllib.request.urlopen(metrics_url).read()
    finally:
        server.stop(None)
    [envelope] = collector.held.values()
    att = pb.Attestation.FromString(Envelope.from_bytes(envelope).payload)
    shares = {j.job_id: j for iv in att.intervals for j in iv.jobs}
    share = shares["k8s:cluster-a/ml/llama-0"]
    assert (share.run, share.run_source, share.account, share.source) == (
        "k8s:cluster-a/ml/JobSet/llama",
        "controller",
        "acme",
        "kubernetes",
    )
    families = {f.name: f for f in text_string_to_metric_families(metrics.decode())}
    assert families["flopwatch_agent_k8s_api_up"].samples[0].value == 1
    assert families["flopwatch_agent_k8s_pods_cached"].samples[0].value == 3
    assert families["flopwatch_agent_k8s_fallback_windows"].samples[0].value == 0
    assert not any(t.name.startswith("flopwatch-k8s") for t in threading.enumerate())


def test_a_pods_parent_run_reaches_its_windows_and_the_record(
    kubelet: tuple[FakeKubelet, Path], kube_api: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    fake, path = kubelet
    api, url = kube_api
    llama_cluster(api)
    labels = {"flopwatch.dev/run": "llama-ft", "flopwatch.dev/run-parent": "llama"}
    api.add(fake_pod("tuner", labels=labels))
    fake.pods = [pod("ml", "tuner", ("nvidia.com/gpu", ["GPU-0"]))]
    directory = kube_directory(url)
    directory.sync()
    attributor = Attributor([labelled_source(path, tmp_path / "proc", directory)])
    checked = attributor.windows([reading_on(GPUS[0], 4242)])
    [a] = attribute(S, 2 * S, [(4242, 1.0)], checked, gpu_ids=["GPU-0"])
    assert (a.job_id, a.run, a.run_parent, a.account) == (
        "k8s:cluster-a/ml/tuner",
        "llama-ft",
        "llama",
        "acme",
    )
    assert attributor.refusals.snapshot() == {}
