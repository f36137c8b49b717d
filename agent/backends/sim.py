"""A deterministic simulator of N H100-like GPUs, for load and fault tests without a GPU.

Each GPU runs a reproducible workload drawn from a seeded random generator: a tensor (HMMA) busy
fraction, some FP32 work, an SM clock between the profile's bounds, power, and one process
(pid 10000 + index) that owns the whole GPU. The same seed gives the same readings, whatever the
pacing and whatever faults are injected. `fail_next` makes a GPU's next readings carry an error,
as the real backend does when NVML fails, so the agent's gap path can be tested.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.model import Pipe

SIM_NAME = "NVIDIA H100 80GB HBM3 (simulated)"
SIM_SM_COUNT = 132
SIM_CC = (9, 0)
SIM_MAX_SM_CLOCK_MHZ = 1980
SIM_PID_BASE = 10000
SIM_CLOCK_POLL_HZ = 10  # the real backend polls the SM clock at about 10 Hz


@dataclass(frozen=True)
class SimProfile:
    """Ranges each simulated interval draws its workload from (uniformly)."""

    hmma: tuple[float, float] = (0.2, 0.8)  # HMMA tensor-pipe busy fraction
    fp32: tuple[float, float] = (0.0, 0.1)  # FP32 pipe busy fraction
    clock_mhz: tuple[float, float] = (1100.0, float(SIM_MAX_SM_CLOCK_MHZ))
    power_w: tuple[float, float] = (250.0, 700.0)

    def __post_init__(self) -> None:
        for name in ("hmma", "fp32"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"SimProfile.{name} must satisfy 0 <= low <= high <= 1")
        lo, hi = self.clock_mhz
        if not 0.0 < lo <= hi <= SIM_MAX_SM_CLOCK_MHZ:
            raise ValueError(f"SimProfile.clock_mhz must lie in (0, {SIM_MAX_SM_CLOCK_MHZ}]")
        if not 0.0 <= self.power_w[0] <= self.power_w[1]:
            raise ValueError("SimProfile.power_w must satisfy 0 <= low <= high")


DEFAULT_PROFILE = SimProfile()


class SimBackend:
    """GpuBackend simulating `n_gpus` H100-like GPUs.

    Readings cover [start_ns + k x interval, start_ns + (k+1) x interval); `start_ns` defaults to
    now rounded down to the second. With `realtime=False` next_readings returns at once; with
    `realtime=True` it paces itself on a monotonic schedule using the injected `sleep`. After
    `limit` intervals (None: never) next_readings returns None, as does a closed backend.
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
        self._faults: dict[int, list[str]] = {}
        self._gpus = tuple(
            GpuInfo(
                uuid=f"GPU-sim-{seed}-{i}",
                name=SIM_NAME,
                sm_count=SIM_SM_COUNT,
                cc=SIM_CC,
                max_sm_clock_mhz=SIM_MAX_SM_CLOCK_MHZ,
                index=i,
                serial=f"sim-{seed}-{i}",
            )
            for i in range(n_gpus)
        )
        # One generator per GPU, so one GPU's workload does not depend on how many others exist.
        self._rngs = [random.Random(f"flopwatch-sim/{seed}/{i}") for i in range(n_gpus)]  # noqa: S311

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def fail_next(self, gpu_index: int, message: str, count: int = 1) -> None:
        """Make GPU `gpu_index`'s next `count` readings carry `error=message` (a signed gap)."""
        if not 0 <= gpu_index < len(self._gpus):
            raise IndexError(f"no simulated GPU {gpu_index}")
        with self._lock:
            self._faults.setdefault(gpu_index, []).extend([message] * count)

    @property
    def intervals_delivered(self) -> int:
        return self._k

    def next_readings(self) -> list[GpuReading] | None:
        """The next interval's readings, one per GPU; None after `limit` intervals or close()."""
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
            errors = {i: msgs.pop(0) for i, msgs in self._faults.items() if msgs}
        return [
            self._reading(gpu, rng, start, errors.get(gpu.index))
            for gpu, rng in zip(self._gpus, self._rngs, strict=True)
        ]

    def _reading(
        self, gpu: GpuInfo, rng: random.Random, start: int, error: str | None
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
        return GpuReading(
            gpu=gpu,
            start_ns=start,
            end_ns=start + self._interval_ns,
            pipe_busy=None if error else busy,
            sm_clock_mhz_s=0.0 if error else clock * seconds,
            clock_samples=0 if error else max(1, round(seconds * SIM_CLOCK_POLL_HZ)),
            energy_mj=None if error else round(power_w * seconds * 1000),
            utilization=None if error else min(1.0, hmma + fp32),
            processes=(ProcessShare(SIM_PID_BASE + gpu.index, 1.0),),
            error=error,
        )

    def close(self) -> None:
        self._closed = True
