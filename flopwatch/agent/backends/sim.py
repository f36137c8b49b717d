"""A deterministic GPU simulator, for load and fault tests without a GPU.

Each simulated device runs a reproducible workload drawn from a seeded random generator: a
tensor (HMMA) busy fraction, some FP32 work, an SM clock between the profile's bounds, power,
and one process (pid 10000 + device number) that owns the whole device. The same seed gives the
same readings, whatever the pacing and whatever faults are injected.

GPU identities: given a node id, each GPU's UUID (and MIG instance id, and serial) is a stable
hash of the node id and the device's number, in NVIDIA's format (GPU-xxxxxxxx-xxxx-xxxx-xxxx-
xxxxxxxxxxxx), so simulated nodes that share a collector never claim the same GPU, and a node
restarted with the same id measures the same GPUs. Without a node id (tests) they are named after
the seed: GPU-sim-SEED-i.

The GPU model is part of the profile: H100-like by default (GPM), A100-like (no GPM: readings
carry a kernel-busy fraction instead of pipe activity), a GPU the rate table does not know, or
an H100 split into MIG instances (one device per instance). `fail_next` makes a device's next
readings carry an error, as the real backend does when NVML fails or a profiler holds the
counters, so the agent's gap path can be tested.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flopwatch.agent.backends.base import (
    BindingStatus,
    GapCause,
    GpuInfo,
    GpuReading,
    HardwareBinding,
    ProcessShare,
)
from flopwatch.model import Pipe

SIM_PID_BASE = 10000
SIM_CLOCK_POLL_HZ = 10  # the real backend polls the SM clock at about 10 Hz


@dataclass(frozen=True)
class SimGpuModel:
    """What a simulated GPU looks like to the FLOP model."""

    name: str
    sm_count: int
    cc: tuple[int, int]
    max_sm_clock_mhz: int
    gpm: bool = True
    mig_sm_counts: tuple[int, ...] = ()  # one MIG instance per entry; () for a whole GPU

    def __post_init__(self) -> None:
        if self.sm_count < 1 or self.max_sm_clock_mhz < 1:
            raise ValueError("SimGpuModel needs a positive SM count and maximum clock")
        if any(n < 1 for n in self.mig_sm_counts) or sum(self.mig_sm_counts) > self.sm_count:
            raise ValueError("MIG instances need positive SM counts within the GPU's")


H100 = SimGpuModel("NVIDIA H100 80GB HBM3 (simulated)", 132, (9, 0), 1980)
A100 = SimGpuModel("NVIDIA A100-SXM4-80GB (simulated)", 108, (8, 0), 1410, gpm=False)
# A compute capability the rate table does not know: records say method unknown-rate.
UNKNOWN_GPU = SimGpuModel("NVIDIA future GPU (simulated)", 160, (15, 0), 2100)
# An H100 split into MIG instances 4g.40gb (64 SMs), 2g.20gb (32) and 1g.10gb (16).
H100_MIG = SimGpuModel(
    "NVIDIA H100 80GB HBM3 (simulated)", 132, (9, 0), 1980, mig_sm_counts=(64, 32, 16)
)


@dataclass(frozen=True)
class SimProfile:
    """The GPU model and the ranges each simulated interval draws its workload from."""

    hmma: tuple[float, float] = (0.2, 0.8)  # HMMA tensor-pipe busy fraction
    fp32: tuple[float, float] = (0.0, 0.1)  # FP32 pipe busy fraction
    clock_mhz: tuple[float, float] = (1100.0, 1980.0)
    power_w: tuple[float, float] = (250.0, 700.0)
    gpu: SimGpuModel = field(default=H100)

    def __post_init__(self) -> None:
        for name in ("hmma", "fp32"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"SimProfile.{name} must satisfy 0 <= low <= high <= 1")
        lo, hi = self.clock_mhz
        top = self.gpu.max_sm_clock_mhz
        if not 0.0 < lo <= hi <= top:
            raise ValueError(f"SimProfile.clock_mhz must lie in (0, {top}]")
        if not 0.0 <= self.power_w[0] <= self.power_w[1]:
            raise ValueError("SimProfile.power_w must satisfy 0 <= low <= high")


DEFAULT_PROFILE = SimProfile()
PROFILES = {
    "h100": DEFAULT_PROFILE,
    "a100": SimProfile(gpu=A100, clock_mhz=(1000.0, 1410.0), power_w=(100.0, 400.0)),
    "unknown": SimProfile(gpu=UNKNOWN_GPU, clock_mhz=(1200.0, 2100.0)),
    "h100-mig": SimProfile(gpu=H100_MIG),
}


def node_uuid(kind: str, node_id: str, *device: int) -> str:
    """A stable NVIDIA-format id (KIND-8-4-4-4-12 hex digits) for a device of a simulated node."""
    h = hashlib.sha256(
        "/".join(["flopwatch-sim", kind, node_id, *map(str, device)]).encode()
    ).hexdigest()
    return f"{kind}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _devices(
    model: SimGpuModel, n_gpus: int, seed: int, node_id: str | None
) -> tuple[tuple[GpuInfo, ...], tuple[GpuInfo, ...]]:
    """(the physical GPUs, the measured devices: the GPUs or their MIG instances)."""
    physical, out = [], []
    for i in range(n_gpus):
        if node_id is None:
            uuid, serial = f"GPU-sim-{seed}-{i}", f"sim-{seed}-{i}"
        else:
            uuid = node_uuid("GPU", node_id, i)
            serial = f"{int(uuid[4:12], 16) % 10**13:013d}"  # 13 digits, as NVIDIA's are
        whole = GpuInfo(
            uuid=uuid,
            name=model.name,
            sm_count=model.sm_count,
            cc=model.cc,
            max_sm_clock_mhz=model.max_sm_clock_mhz,
            index=i,
            serial=serial,
        )
        physical.append(whole)
        if not model.mig_sm_counts:
            out.append(whole)
        for j, sms in enumerate(model.mig_sm_counts):
            out.append(
                GpuInfo(
                    uuid=whole.uuid,
                    name=f"{model.name} MIG {j}",
                    sm_count=sms,
                    cc=model.cc,
                    max_sm_clock_mhz=model.max_sm_clock_mhz,
                    index=i,
                    serial=whole.serial,
                    mig_instance=(
                        f"MIG-sim-{seed}-{i}-{j}"
                        if node_id is None
                        else node_uuid("MIG", node_id, i, j)
                    ),
                )
            )
    return tuple(physical), tuple(out)


class SimBackend:
    """GpuBackend simulating `n_gpus` GPUs of the profile's model (MIG instances: one device
    each, numbered in order; `fail_next` and process ids use that device number).

    Readings cover [start_ns + k x interval, start_ns + (k+1) x interval); `start_ns` defaults to
    now rounded down to the second. With `realtime=False` next_readings returns at once; with
    `realtime=True` it sleeps until each interval's end on a monotonic schedule (no busy wait).
    After `limit` intervals (None: never) next_readings returns None, as does a closed backend.
    `node_id` names the GPUs after the node (see the module docstring).
    """

    def __init__(
        self,
        n_gpus: int,
        interval_s: float = 1.0,
        seed: int = 0,
        start_ns: int | None = None,
        *,
        realtime: bool = False,
        profile: SimProfile = DEFAULT_PROFILE,
        limit: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
        node_id: str | None = None,
    ) -> None:
        if n_gpus < 1:
            raise ValueError("n_gpus must be at least 1")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if limit is not None and limit < 0:
            raise ValueError("limit must be None or non-negative")
        self._interval_ns = round(interval_s * 1e9)
        self._start_ns = start_ns if start_ns is not None else time_ns() // 10**9 * 10**9
        self._realtime = realtime
        self._profile = profile
        self._limit = limit
        self._sleep = sleep
        self._monotonic = monotonic
        self._t0: float | None = None  # monotonic time of the first call (realtime pacing)
        self._k = 0  # intervals delivered so far
        self._closed = False
        self._lock = threading.Lock()
        self._faults: dict[int, list[tuple[str, GapCause]]] = {}
        self._physical, self._gpus = _devices(profile.gpu, n_gpus, seed, node_id)
        # One generator per device, so one device's workload does not depend on how many
        # others exist.
        self._rngs = [random.Random(f"flopwatch-sim/{seed}/{i}") for i in range(len(self._gpus))]  # noqa: S311

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def fail_next(
        self,
        device: int,
        message: str,
        count: int = 1,
        cause: GapCause = GapCause.SAMPLING_ERROR,
    ) -> None:
        """Make device `device`'s next `count` readings carry `error=message` (a signed gap)."""
        if not 0 <= device < len(self._gpus):
            raise IndexError(f"no simulated device {device}")
        with self._lock:
            self._faults.setdefault(device, []).extend([(message, cause)] * count)

    @property
    def intervals_delivered(self) -> int:
        return self._k

    def next_readings(self) -> list[GpuReading] | None:
        """The next interval's readings, one per device; None after `limit` intervals or close()."""
        if self._closed or (self._limit is not None and self._k >= self._limit):
            return None
        if self._realtime:
            if self._t0 is None:
                self._t0 = self._monotonic()
            due = self._t0 + (self._k + 1) * self._interval_ns / 1e9
            delay = due - self._monotonic()
            if delay > 0:
                self._sleep(delay)
        start = self._start_ns + self._k * self._interval_ns
        self._k += 1
        with self._lock:
            errors = {i: faults.pop(0) for i, faults in self._faults.items() if faults}
        return [
            self._reading(n, gpu, rng, start, errors.get(n))
            for n, (gpu, rng) in enumerate(zip(self._gpus, self._rngs, strict=True))
        ]

    def _reading(
        self,
        n: int,
        gpu: GpuInfo,
        rng: random.Random,
        start: int,
        fault: tuple[str, GapCause] | None,
    ) -> GpuReading:
        p = self._profile
        seconds = self._interval_ns / 1e9
        # Draw every value even for a failed interval, so faults never shift the workload.
        hmma = rng.uniform(*p.hmma)
        fp32 = rng.uniform(*p.fp32)
        clock = rng.uniform(*p.clock_mhz)
        power_w = rng.uniform(*p.power_w)
        busy = {pipe: 0.0 for pipe in Pipe}
        busy[Pipe.HMMA] = hmma
        busy[Pipe.FP32] = fp32
        ok = fault is None
        gpm = p.gpu.gpm
        return GpuReading(
            gpu=gpu,
            start_ns=start,
            end_ns=start + self._interval_ns,
            pipe_busy=busy if ok and gpm else None,
            sm_clock_mhz_s=clock * seconds if ok else 0.0,
            clock_samples=max(1, round(seconds * SIM_CLOCK_POLL_HZ)) if ok else 0,
            energy_mj=round(power_w * seconds * 1000) if ok and not gpu.mig_instance else None,
            # Kernels ran at least while a pipe was busy: the busy fraction covers both pipes.
            utilization=min(1.0, hmma + fp32) if ok else None,
            processes=(ProcessShare(SIM_PID_BASE + n, 1.0),),
            error=None if fault is None else fault[0],
            cause=GapCause.SAMPLING_ERROR if fault is None else fault[1],
        )

    def hardware_bindings(self, nonce: bytes) -> list[HardwareBinding]:
        """Simulated GPUs have no confidential-computing report; each says so."""
        return [
            HardwareBinding(g, BindingStatus.NOT_SUPPORTED, "simulated GPU") for g in self._physical
        ]

    def close(self) -> None:
        self._closed = True
