"""GPU backends: real NVML, replay of a recorded trace, and a simulator, behind one interface."""

from flopwatch.agent.backends.base import GpuBackend, GpuInfo, GpuReading, ProcessShare

__all__ = ["GpuBackend", "GpuInfo", "GpuReading", "ProcessShare"]
