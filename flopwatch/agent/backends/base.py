"""The one interface every GPU backend implements, and the readings it delivers."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flopwatch.model import Counters, Pipe


@dataclass(frozen=True)
class GpuInfo:
    """Identity of one GPU (or MIG instance) on the node."""

    uuid: str
    name: str
    sm_count: int
    cc: tuple[int, int]
    max_sm_clock_mhz: int
    index: int = 0
    serial: str = ""
    mig_instance: str = ""


class GapCause(enum.Enum):
    """Why a reading with `error` set was not measured; it names the signed gap's reason."""

    SAMPLING_ERROR = "sampling-error"  # an NVML call failed, or the GPU cannot be read
    PROFILER_BUSY = "profiler-busy"  # another client (a profiler) held the counters


@dataclass(frozen=True)
class ProcessShare:
    """A process's share (0..1) of the GPU's work in one interval."""

    pid: int
    share: float


@dataclass(frozen=True)
class GpuReading:
    """What one GPU measured over [start_ns, end_ns).

    `pipe_busy` holds GPM busy fractions (0..1) per pipe, or None where the GPU has no GPM;
    then `utilization` is the fraction (0..1) of the interval during which any kernel may have
    run, rounded up from NVML's utilization samples (docs/flop-model.md, "No GPM").
    `error` set means the interval was not measured and must become a signed gap; `cause`
    says why.
    """

    gpu: GpuInfo
    start_ns: int
    end_ns: int
    pipe_busy: Mapping[Pipe, float] | None
    sm_clock_mhz_s: float  # integral of the SM clock over the interval, MHz x seconds
    clock_samples: int
    energy_mj: int | None = None
    utilization: float | None = None  # kernel-busy fraction bound, 0..1 (no GPM only)
    processes: tuple[ProcessShare, ...] = ()
    error: str | None = None
    cause: GapCause = GapCause.SAMPLING_ERROR

    def counters(self) -> Counters:
        """Integer counters for the FLOP model: elapsed and per-pipe active SM-cycles."""
        elapsed = round(self.gpu.sm_count * self.sm_clock_mhz_s * 1e6)
        # Idle pipes are left out: they add nothing to any figure (Counters reads them as 0).
        active = {
            p: cycles
            for p, f in (self.pipe_busy or {}).items()
            if (cycles := round(min(max(f, 0.0), 1.0) * elapsed))
        }
        return Counters(
            cc=self.gpu.cc,
            sm_count=self.gpu.sm_count,
            max_sm_clock_mhz=self.gpu.max_sm_clock_mhz,
            duration_ns=self.end_ns - self.start_ns,
            elapsed_sm_cycles=elapsed,
            active=active,
        )


class GpuBackend(Protocol):
    """A source of per-interval GPU readings.

    `next_readings` blocks until the next interval has ended and returns one reading per GPU,
    or None once the source is exhausted (end of a replayed trace). Backends pace themselves.
    """

    def gpus(self) -> Sequence[GpuInfo]: ...

    def next_readings(self) -> list[GpuReading] | None: ...

    def close(self) -> None: ...


class BindingStatus(enum.Enum):
    """Outcome of asking a GPU for a confidential-computing attestation report."""

    REPORT = "report"  # the GPU signed a report over the agent's nonce
    NOT_SUPPORTED = "not-supported"  # no such report from this GPU, driver or backend
    CC_OFF = "cc-off"  # the GPU could, but confidential computing is off
    ERROR = "error"  # the query failed


@dataclass(frozen=True)
class HardwareBinding:
    """A physical GPU's answer to a binding request (see flopwatch/binding.py).

    `report` and `cec_report` are the raw bytes NVML returned for the nonce, and `cert_chain`
    the GPU's attestation certificate chain; all empty unless `status` is REPORT.
    """

    gpu: GpuInfo
    status: BindingStatus
    detail: str = ""
    report: bytes = b""
    cec_report: bytes = b""
    cert_chain: bytes = b""


@runtime_checkable
class HardwareBinder(Protocol):
    """A backend that can ask each physical GPU for a report over `nonce` (32 bytes)."""

    def hardware_bindings(self, nonce: bytes) -> Sequence[HardwareBinding]: ...


def shares_from_samples(
    samples: Sequence[tuple[int, float]],
    running_now: Sequence[int],
    running_before: Sequence[int],
) -> tuple[ProcessShare, ...]:
    """Per-process shares of one interval from NVML per-process SM-utilization samples.

    `samples` are (pid, sm percent) seen during the interval. Where NVML gave no usable samples,
    the processes running at either end of the interval split it equally (a process that exited
    during the interval still did its work there).
    """
    total: dict[int, float] = {}
    for pid, sm in samples:
        total[pid] = total.get(pid, 0.0) + max(sm, 0.0)
    weight = sum(total.values())
    if weight > 0:
        return tuple(ProcessShare(pid, v / weight) for pid, v in sorted(total.items()) if v > 0)
    pids = sorted(set(running_now) | set(running_before))
    return tuple(ProcessShare(pid, 1.0 / len(pids)) for pid in pids)
