"""Confidential-computing attestation reports of the physical GPUs, over the agent's nonce.

Where the node runs with confidential computing on (nvmlSystemGetConfComputeState ccFeature
enabled), each GPU signs an attestation report over a 32-byte nonce
(nvmlDeviceGetConfComputeGpuAttestationReport); the agent also takes the GPU's attestation
certificate chain so that a verifier holding NVIDIA's root can check the report offline with
NVIDIA's tools. Otherwise every GPU's answer says why there is no report. A nonce that is not
32 bytes is answered with BindingStatus.ERROR for every GPU, NVML untouched (pynvml would raise
TypeError building its nonce array).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flopwatch.agent.backends.base import BindingStatus, GpuInfo, HardwareBinding
from flopwatch.agent.backends.nvml.lib import Nvml

_UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")
# nvmlConfComputeGpuAttestationReport_t.nonce (NVML_CC_GPU_CEC_NONCE_SIZE)
CC_NONCE_BYTES = 32


def _bytes(array: Any, size: int) -> bytes:
    return bytes(array[: max(0, min(int(size), len(array)))])


def _mode_detail(nv: Any, state: Any) -> str:
    notes = []
    if int(state.devToolsMode) == int(getattr(nv, "NVML_CC_SYSTEM_DEVTOOLS_MODE_ON", -1)):
        notes.append("devtools mode on: not a production attestation")
    if int(state.environment) == int(getattr(nv, "NVML_CC_SYSTEM_ENVIRONMENT_SIM", -1)):
        notes.append("simulated CC environment")
    return "; ".join(notes)


def _failed(nvml: Nvml, gpu: GpuInfo, what: str, e: BaseException) -> HardwareBinding:
    status = BindingStatus.NOT_SUPPORTED if nvml.is_code(e, *_UNSUPPORTED) else BindingStatus.ERROR
    return HardwareBinding(gpu, status, f"{what}: {e}")


def _report(nvml: Nvml, gpu: GpuInfo, handle: Any, nonce: bytes, mode: str) -> HardwareBinding:
    nv = nvml.lib
    try:
        r = nv.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
    except nvml.error as e:
        return _failed(nvml, gpu, "attestation report", e)
    cec = b""
    if int(r.isCecAttestationReportPresent):
        cec = _bytes(r.cecAttestationReport, r.cecAttestationReportSize)
    cert = nvml.optional(nv.nvmlDeviceGetConfComputeGpuCertificate, handle)
    chain = (
        b"" if cert is None else _bytes(cert.attestationCertChain, cert.attestationCertChainSize)
    )
    return HardwareBinding(
        gpu,
        BindingStatus.REPORT,
        mode,
        report=_bytes(r.attestationReport, r.attestationReportSize),
        cec_report=cec,
        cert_chain=chain,
    )


def hardware_bindings(
    nvml: Nvml, gpus: Sequence[tuple[GpuInfo, Any]], nonce: bytes
) -> list[HardwareBinding]:
    """One answer per physical GPU (identity, NVML handle) for `nonce` (32 bytes)."""
    if not isinstance(nonce, bytes) or len(nonce) != CC_NONCE_BYTES:
        size = f"{len(nonce)} bytes" if isinstance(nonce, bytes) else type(nonce).__name__
        bad = f"the attestation nonce must be {CC_NONCE_BYTES} bytes, got {size}"
        return [HardwareBinding(g, BindingStatus.ERROR, bad) for g, _ in gpus]
    nv = nvml.lib
    try:
        state = nv.nvmlSystemGetConfComputeState()
    except nvml.error as e:
        return [_failed(nvml, g, "confidential-computing state", e) for g, _ in gpus]
    if int(state.ccFeature) != int(nv.NVML_CC_SYSTEM_FEATURE_ENABLED):
        off = "confidential computing is off on this node"
        return [HardwareBinding(g, BindingStatus.CC_OFF, off) for g, _ in gpus]
    mode = _mode_detail(nv, state)
    return [_report(nvml, g, h, nonce, mode) for g, h in gpus]
