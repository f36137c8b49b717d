"""The SM clock, polled at about 10 Hz and integrated over each interval.

One poller per backend reads the SM clock of every physical GPU (MIG instances run at their
GPU's clock), stamps each reading with monotonic time and keeps it until no interval needs it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from flopwatch.agent.backends.nvml.lib import Nvml

DEFAULT_CLOCK_POLL_S = 0.1


def integrate_clock(samples: Sequence[tuple[int, float]], start_ns: int, end_ns: int) -> float:
    """Integral of the SM clock over [start_ns, end_ns] in MHz x seconds.

    `samples` are (monotonic ns, MHz) sorted by time. The clock is taken as piecewise linear
    between samples (trapezoid rule) and held constant before the first and after the last one.
    """
    if not samples or end_ns <= start_ns:
        return 0.0
    pts = list(samples)
    if pts[0][0] > start_ns:
        pts.insert(0, (start_ns, pts[0][1]))
    if pts[-1][0] < end_ns:
        pts.append((end_ns, pts[-1][1]))
    total = 0.0
    for (t0, v0), (t1, v1) in itertools.pairwise(pts):
        lo, hi = max(t0, start_ns), min(t1, end_ns)
        if hi <= lo:
            continue
        slope = (v1 - v0) / (t1 - t0)
        total += (v0 + slope * ((lo + hi) / 2 - t0)) * (hi - lo)
    return total / 1e9


class ClockPoller:
    """SM-clock readings per physical GPU (keyed by NVML index), from a thread or by hand.

    `integrate` does not consume readings, so several devices (MIG instances) of one GPU can
    integrate the same stretch; `trim` drops what no later interval will need.
    """

    def __init__(
        self, nvml: Nvml, handles: dict[int, Any], monotonic_ns: Callable[[], int]
    ) -> None:
        self._nvml = nvml
        self._handles = handles
        self._mono = monotonic_ns
        self._lock = threading.Lock()
        self._samples: dict[int, list[tuple[int, float]]] = {k: [] for k in handles}
        self._errors: dict[int, list[tuple[int, str]]] = {k: [] for k in handles}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Read every GPU's SM clock once and keep it, stamped with monotonic time."""
        nv = self._nvml.lib
        for key, handle in self._handles.items():
            try:
                mhz = float(nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))
            except self._nvml.error as e:
                with self._lock:
                    self._errors[key].append((self._mono(), f"SM clock read failed: {e}"))
                continue
            now = self._mono()
            with self._lock:
                self._samples[key].append((now, mhz))

    def start(self, every_s: float) -> None:
        """Poll every `every_s` seconds on a daemon thread until `stop`."""

        def loop() -> None:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(every_s)

        self._thread = threading.Thread(target=loop, name="nvml-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def integrate(self, key: int, start: int, end: int) -> tuple[float, int, str | None]:
        """(MHz x s over [start, end], readings inside it, the last error inside it if any)."""
        with self._lock:
            pts = sorted(self._samples[key])
            errors = [msg for t, msg in self._errors[key] if start < t <= end]
        inside = sum(1 for t, _ in pts if start < t <= end)
        if errors:
            return 0.0, inside, errors[-1]
        if inside == 0:
            return 0.0, 0, "no SM clock readings in the interval"
        return integrate_clock(pts, start, end), inside, None

    def trim(self, key: int, keep_from: int) -> None:
        """Forget readings and errors before `keep_from`, keeping the last reading before it."""
        with self._lock:
            pts = sorted(self._samples[key])
            self._samples[key] = [p for p in pts if p[0] <= keep_from][-1:] + [
                p for p in pts if p[0] > keep_from
            ]
            self._errors[key] = [(t, m) for t, m in self._errors[key] if t > keep_from]
