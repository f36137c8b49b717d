"""Client of the kubelet's PodResources API v1 (vendored proto, flopwatch/vendor/kubelet).

`List` returns every pod on the node with, per container, the devices the device plugins
assigned to it. The NVIDIA device plugin names whole GPUs `nvidia.com/gpu` and MIG instances
`nvidia.com/mig-<profile>`; its device ids are GPU (or MIG) UUIDs, or NVML indices under
DEVICE_ID_STRATEGY=index, and shared (time-sliced) replicas carry a "::N" suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from flopwatch.errors import TransportError
from flopwatch.vendor.kubelet.podresources.v1 import api_pb2, api_pb2_grpc

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_RESPONSE_BYTES = 16 << 20  # a node with many pods and CPUs listed


@dataclass(frozen=True)
class PodGpu:
    """One GPU (device id as the device plugin gave it) assigned to a pod's container."""

    namespace: str
    pod: str
    container: str
    device_id: str


def is_gpu_resource(name: str) -> bool:
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


def gpu_assignments(response: api_pb2.ListPodResourcesResponse) -> list[PodGpu]:
    out = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for device in container.devices:
                if not is_gpu_resource(device.resource_name):
                    continue
                for device_id in device.device_ids:
                    base = device_id.split("::", 1)[0]  # time-slicing replica "GPU-x::3"
                    out.append(PodGpu(pod.namespace, pod.name, container.name, base))
    return out


class PodResourcesClient:
    """Calls List on the kubelet's unix socket; failures become TransportError."""

    def __init__(self, socket_path: Path = DEFAULT_SOCKET, *, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            f"unix:{socket_path}",
            options=[("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)],
        )
        # The generated constructor carries no annotations.
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def list_gpus(self) -> list[PodGpu]:
        try:
            response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
        except grpc.RpcError as e:
            code = e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            raise TransportError(
                f"kubelet PodResources API at {self.socket_path}: {code}: {details}"
            ) from e
        return gpu_assignments(response)

    def close(self) -> None:
        self._channel.close()
