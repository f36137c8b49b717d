"""A GPU backend driven by the test: each `tick()` yields one reading per GPU, timed now."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.model import Pipe

H100 = [
    GpuInfo(
        uuid=f"GPU-tick-{i}",
        name="NVIDIA H100 80GB HBM3",
        sm_count=132,
        cc=(9, 0),
        max_sm_clock_mhz=1980,
        index=i,
    )
    for i in range(2)
]
INTERVAL_NS = 10_000_000  # 10 ms


class TickBackend:
    def __init__(self, gpus: Sequence[GpuInfo] = H100) -> None:
        self._gpus = list(gpus)
        self._ticks: queue.Queue[tuple[tuple[ProcessShare, ...], str | None] | None] = queue.Queue()

    def tick(self, processes: tuple[ProcessShare, ...] = (), error: str | None = None) -> None:
        self._ticks.put((processes, error))

    def end(self) -> None:
        self._ticks.put(None)

    def gpus(self) -> Sequence[GpuInfo]:
        return self._gpus

    def next_readings(self) -> list[GpuReading] | None:
        try:  # wake up now and then so that the agent's stop is seen
            item = self._ticks.get(timeout=0.05)
        except queue.Empty:
            return []
        if item is None:
            return None
        processes, error = item
        start = time.time_ns()
        return [
            GpuReading(
                gpu=g,
                start_ns=start,
                end_ns=start + INTERVAL_NS,
                pipe_busy={Pipe.HMMA: 0.5, Pipe.FP32: 0.1},
                sm_clock_mhz_s=1500 * INTERVAL_NS / 1e9,
                clock_samples=1,
                energy_mj=7000,
                processes=processes,
                error=error,
            )
            for g in self._gpus
        ]

    def close(self) -> None:
        pass


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll a condition with a deadline (no guessed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
