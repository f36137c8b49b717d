"""MIG instances of one physical GPU, each measured as a device of its own.

A GPU in MIG mode is split into GPU instances with their own SMs; NVML gives each one a MIG
device handle (its UUID, SM count, running processes) and GPM samples per GPU instance
(nvmlGpmMigSampleGet on the GPU's handle). The GPU as a whole is then not measured: its work is
the sum of its instances', and measuring both would count it twice. The instances run at their
GPU's SM clock; NVML has no per-instance energy counter, so instance records carry no energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flopwatch.agent.backends.nvml.lib import Nvml, text


@dataclass(frozen=True)
class MigInstance:
    handle: Any  # the MIG device handle (processes, attributes)
    uuid: str  # "MIG-..." as NVML names it
    name: str  # e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    gpu_instance: int  # GPU instance id, the key of nvmlGpmMigSampleGet
    sm_count: int


def mig_enabled(nvml: Nvml, handle: Any) -> bool:
    """Whether the GPU runs in MIG mode now (a pending change counts only after a reset)."""
    nv = nvml.lib
    mode = nvml.optional(nv.nvmlDeviceGetMigMode, handle)
    return mode is not None and int(mode[0]) == int(nv.NVML_DEVICE_MIG_ENABLE)


def mig_instances(nvml: Nvml, handle: Any) -> list[MigInstance]:
    """The GPU's MIG instances, in NVML's order; raises NVMLError if one cannot be read."""
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
