"""NVML facts shared by the real and the replay backend: GPM metric ids and SM geometry."""

from __future__ import annotations

from types import MappingProxyType

from flopwatch.model import Pipe

# NVML GPM metric ids (nvml.h, NVML_GPM_METRIC_*_UTIL) for each pipe the FLOP model counts,
# and the key the trace recorder writes them under.
GPM_PIPE_METRICS = MappingProxyType(
    {
        Pipe.DFMA_TENSOR: 6,  # NVML_GPM_METRIC_DFMA_TENSOR_UTIL
        Pipe.HMMA: 7,  # NVML_GPM_METRIC_HMMA_TENSOR_UTIL
        Pipe.IMMA: 9,  # NVML_GPM_METRIC_IMMA_TENSOR_UTIL
        Pipe.FP64: 11,  # NVML_GPM_METRIC_FP64_UTIL
        Pipe.FP32: 12,  # NVML_GPM_METRIC_FP32_UTIL
        Pipe.FP16: 13,  # NVML_GPM_METRIC_FP16_UTIL
    }
)
GPM_PIPE_KEYS = MappingProxyType(
    {
        Pipe.DFMA_TENSOR: "dfma_tensor",
        Pipe.HMMA: "hmma_tensor",
        Pipe.IMMA: "imma_tensor",
        Pipe.FP64: "fp64",
        Pipe.FP32: "fp32",
        Pipe.FP16: "fp16",
    }
)

# CUDA cores per SM by compute capability; NVML reports cores, the model needs SMs.
_CORES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64}


def cores_per_sm(cc: tuple[int, int]) -> int:
    return _CORES_PER_SM.get(cc, 128)
