"""MIG instances of one physical GPU, each measured as a device of its own.

A GPU in MIG mode is split into GPU instances with their own SMs, and each GPU instance into one
or more compute instances that share its SMs out between them. NVML gives each compute instance
a MIG device handle: its UUID, its SM count (nvmlDeviceGetAttributes multiprocessorCount: the
compute instance's SMs, part of its GPU instance's), its running processes. Each MIG device is
a measured device. The GPU as a whole is then not measured: its work is the sum of its
instances', and measuring both would count it twice. The instances run at their GPU's SM clock;
NVML has no per-instance energy counter, so instance records carry no energy.

GPM activity (`mig_gpm`), as DCGM's DcgmGpmManager reads it:
- per compute instance, nvmlGpmSampleGet(MIG device handle): each device's own busy fractions
  over its own SMs. The figures of the compute instances of one GPU instance then add up to the
  GPU instance's.
- where the driver cannot sample a MIG device (NOT_SUPPORTED or another "not supported"-like
  code when the agent starts), the GPU instance's figure, nvmlGpmMigSampleGet(GPU handle, GPU
  instance id): busy fractions over the GPU instance's SMs. It is read once per interval for
  the whole GPU instance (gpm.SharedGpm) and every compute instance of it is given the GPU
  instance's fractions over its own SMs. Work runs only on SMs of a compute instance, and
  compute instances do not share SMs, so the compute instances' figures add up to at most the
  GPU instance's (exactly, where they cover all its SMs): never more. Which compute instance
  did the work is not known on such a driver; each is given its SMs' part of it. All compute
  instances of a GPU instance use the same path: mixing a compute instance's own figure with
  another's share of the GPU instance's could count work twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flopwatch.agent.backends.nvml.gpm import GpmSampler, GpmSource, SharedGpm
from flopwatch.agent.backends.nvml.lib import Nvml, text
from flopwatch.model import Pipe


@dataclass(frozen=True)
class MigInstance:
    handle: Any  # the MIG device handle (processes, attributes, GPM samples)
    uuid: str  # "MIG-..." as NVML names it
    name: str  # e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    gpu_instance: int  # GPU instance id, the key of nvmlGpmMigSampleGet
    sm_count: int  # the compute instance's SMs


def mig_enabled(nvml: Nvml, handle: Any) -> bool:
    """Whether the GPU runs in MIG mode now (a pending change counts only after a reset)."""
    nv = nvml.lib
    mode = nvml.optional(nv.nvmlDeviceGetMigMode, handle)
    return mode is not None and int(mode[0]) == int(nv.NVML_DEVICE_MIG_ENABLE)


def mig_instances(nvml: Nvml, handle: Any) -> list[MigInstance]:
    """The GPU's MIG devices, in NVML's order; raises NVMLError if one cannot be read."""
    nv = nvml.lib
    out = []
    for i in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except nvml.error as e:
            if nvml.is_code(e, "NVML_ERROR_NOT_FOUND"):
                continue  # an empty slot
            raise
        out.append(
            MigInstance(
                handle=mig,
                uuid=text(nv.nvmlDeviceGetUUID(mig)),
                name=text(nv.nvmlDeviceGetName(mig)),
                gpu_instance=int(nv.nvmlDeviceGetGpuInstanceId(mig)),
                sm_count=int(nv.nvmlDeviceGetAttributes(mig).multiprocessorCount),
            )
        )
    return out


def mig_gpm(
    nvml: Nvml, gpu: Any, instances: Sequence[MigInstance], metrics: Mapping[Pipe, int]
) -> list[GpmSource]:
    """The GPM source of each instance, in order, with its buffers allocated: its own samples,
    or a share of its GPU instance's where NVML cannot sample one of that GPU instance's MIG
    devices (module docstring). Raises NVMLError if buffers cannot be allocated."""
    own: list[GpmSampler] = []
    whole_gi: set[int] = set()
    shared: dict[int, SharedGpm] = {}
    try:
        for m in instances:
            s = GpmSampler(nvml, m.handle, metrics)
            own.append(s)
            s.alloc()
            error = s.probe()
            if error is not None and s.unsupported(error):
                whole_gi.add(m.gpu_instance)
        for gi in sorted(whole_gi):
            shared[gi] = SharedGpm(GpmSampler(nvml, gpu, metrics, gpu_instance=gi))
            shared[gi].alloc()
    except nvml.error:
        for s in [*own, *(g.sampler for g in shared.values())]:
            s.free()
        raise
    out: list[GpmSource] = []
    for m, s in zip(instances, own, strict=True):
        if m.gpu_instance in shared:
            s.free()
            out.append(shared[m.gpu_instance])
        else:
            out.append(s)
    return out
