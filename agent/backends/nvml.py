"""The real GPU backend: NVML GPM pipe utilization, an integrated SM clock, energy and processes.

One NVML entry point (nvitop's libnvml habits): NVML is initialised lazily on first use, a reading
the GPU does not support is None, and a missing library is a clear NvmlUnavailableError.

Per interval and GPU: GPM busy fractions from two alternating GPM samples, the SM clock polled at
~10 Hz by a background thread and integrated (trapezoid, clipped to the interval), energy as the
difference of the total-energy counter, and the running processes with their SM-utilization shares.
An NVML error in the essential readings (GPM, clock) yields a reading with `error` set, which the
agent signs as a gap; it never stops the sampling of the other GPUs or of the next interval.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.backends.base import GpuInfo, GpuReading, shares_from_samples
from agent.backends.nvml_ids import GPM_PIPE_METRICS, cores_per_sm
from flopwatch.errors import BackendError, NvmlUnavailableError
from flopwatch.model import Pipe

log = logging.getLogger(__name__)

LIBRARY_NOT_FOUND = "NVML library not found: is the NVIDIA driver installed?"
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


@dataclass
class _Gpu:
    """One GPU's handle, identity and the state carried from one interval to the next."""

    handle: Any
    info: GpuInfo
    gpm: bool
    samples: list[Any] = field(default_factory=list)  # two GPM sample buffers
    cur: int = 0  # the buffer the next GPM sample goes into
    have_base: bool = False  # the other buffer holds the sample taken at the interval start
    energy_mj: int | None = None
    running: list[int] = field(default_factory=list)
    putil_ts: int = 0  # NVML per-process utilization: last timestamp seen (unix us)
    clock: list[tuple[int, float]] = field(default_factory=list)  # (monotonic ns, MHz)
    clock_errors: list[tuple[int, str]] = field(default_factory=list)


class NvmlBackend:
    """GpuBackend over the real NVML library (pynvml, package nvidia-ml-py).

    `nvml` injects the module (tests pass a fake); None imports pynvml on first use. Time is
    injectable: `monotonic_ns` paces the schedule and stamps clock samples, `time_ns` gives the
    unix times readings carry, `sleep` waits for interval boundaries. With `clock_thread=False`
    no poller thread runs and the caller drives `poll_clocks()` itself (tests).
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        nvml: Any = None,
        *,
        allow_no_gpm: bool = False,
        clock_poll_s: float = DEFAULT_CLOCK_POLL_S,
        clock_thread: bool = True,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        time_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if interval_s <= 0 or clock_poll_s <= 0:
            raise ValueError("interval_s and clock_poll_s must be positive")
        self._interval_ns = round(interval_s * 1e9)
        self._nvml = nvml
        self._allow_no_gpm = allow_no_gpm
        self._clock_poll_s = clock_poll_s
        self._clock_thread = clock_thread
        self._mono = monotonic_ns
        self._wall = time_ns
        self._sleep = sleep
        self._gpus: list[_Gpu] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_ns = 0  # monotonic time of the next interval boundary; 0 before the first
        self._last = (0, 0)  # (monotonic ns, unix ns) of the last boundary
        self._closed = False

    # -- the one entry point to NVML ---------------------------------------------------------

    def _lib(self) -> Any:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as e:
                raise NvmlUnavailableError("pynvml (nvidia-ml-py) is not installed") from e
        return self._nvml

    def _code(self, e: BaseException, name: str) -> bool:
        return getattr(e, "value", None) == getattr(self._lib(), name, object())

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call an NVML function whose answer is optional: None where it fails or is unsupported."""
        try:
            return fn(*args)
        except self._lib().NVMLError as e:
            if not self._code(e, "NVML_ERROR_NOT_SUPPORTED"):
                log.debug("NVML %s failed: %s", getattr(fn, "__name__", fn), e)
            return None

    def _open(self) -> list[_Gpu]:
        if self._gpus is not None:
            return self._gpus
        if self._closed:
            raise BackendError("the NVML backend is closed")
        nv = self._lib()
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            if self._code(e, "NVML_ERROR_LIBRARY_NOT_FOUND"):
                raise NvmlUnavailableError(LIBRARY_NOT_FOUND) from e
            raise NvmlUnavailableError(f"NVML initialisation failed: {e}") from e
        try:
            gpus = [self._identify(i) for i in range(nv.nvmlDeviceGetCount())]
            for g in gpus:
                if g.gpm:
                    g.samples = [nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()]
        except nv.NVMLError as e:
            self._shutdown()
            raise BackendError(f"cannot set up the GPUs through NVML: {e}") from e
        if not any(g.gpm for g in gpus):
            if not self._allow_no_gpm:
                self._shutdown()
                raise NvmlUnavailableError(
                    "GPM metrics are not supported on any GPU of this node (NVML GPM needs "
                    "Hopper or later); pass allow_no_gpm to fall back to coarse utilization"
                )
            log.warning("no GPU supports GPM: falling back to coarse utilization readings")
        self._gpus = gpus
        if self._clock_thread:
            self._thread = threading.Thread(target=self._poll_loop, name="nvml-clock", daemon=True)
            self._thread.start()
        return gpus

    def _identify(self, index: int) -> _Gpu:
        nv = self._lib()
        h = nv.nvmlDeviceGetHandleByIndex(index)
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
        cc = (int(major), int(minor))
        support = self._optional(nv.nvmlGpmQueryDeviceSupport, h)
        info = GpuInfo(
            uuid=_text(nv.nvmlDeviceGetUUID(h)),
            name=_text(nv.nvmlDeviceGetName(h)),
            sm_count=int(nv.nvmlDeviceGetNumGpuCores(h)) // cores_per_sm(cc),
            cc=cc,
            max_sm_clock_mhz=int(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
            index=index,
            serial=_text(self._optional(nv.nvmlDeviceGetSerial, h) or ""),
        )
        return _Gpu(handle=h, info=info, gpm=bool(support and support.isSupportedDevice))

    # -- SM clock polling ---------------------------------------------------------------------

    def poll_clocks(self) -> None:
        """Read every GPU's SM clock once and keep it, stamped with monotonic time."""
        nv = self._lib()
        for g in self._gpus or ():
            try:
                mhz = float(nv.nvmlDeviceGetClockInfo(g.handle, nv.NVML_CLOCK_SM))
            except nv.NVMLError as e:
                with self._lock:
                    g.clock_errors.append((self._mono(), f"SM clock read failed: {e}"))
                continue
            now = self._mono()
            with self._lock:
                g.clock.append((now, mhz))

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_clocks()
            self._stop.wait(self._clock_poll_s)

    def _take_clock(self, g: _Gpu, start: int, end: int) -> tuple[float, int, str | None]:
        """Integrate the clock over [start, end]; drop samples the next interval will not need."""
        with self._lock:
            pts = sorted(g.clock)
            errors = [msg for t, msg in g.clock_errors if start < t <= end]
            g.clock_errors = [(t, m) for t, m in g.clock_errors if t > end]
            g.clock = [p for p in pts if p[0] <= end][-1:] + [p for p in pts if p[0] > end]
        inside = sum(1 for t, _ in pts if start < t <= end)
        if errors:
            return 0.0, inside, errors[-1]
        if inside == 0:
            return 0.0, 0, "no SM clock readings in the interval"
        return integrate_clock(pts, start, end), inside, None

    # -- intervals ----------------------------------------------------------------------------

    def gpus(self) -> Sequence[GpuInfo]:
        return tuple(g.info for g in self._open())

    def next_readings(self) -> list[GpuReading] | None:
        """Block until the next interval boundary, then return one reading per GPU.

        Boundaries lie on a fixed monotonic schedule (start + k x interval), so intervals do not
        drift; a caller late by more than an interval gets one longer interval, then the schedule
        resumes. Returns None once the backend is closed.
        """
        if self._closed:
            return None
        gpus = self._open()
        if self._next_ns == 0:
            self._mark_boundary()
            for g in gpus:
                self._start(g)
            self._next_ns = self._last[0] + self._interval_ns
        delay = self._next_ns - self._mono()
        if delay > 0:
            self._sleep(delay / 1e9)
        (t0, w0), (t1, w1) = self._last, self._mark_boundary()
        self._next_ns += self._interval_ns
        if self._next_ns <= t1:
            self._next_ns += ((t1 - self._next_ns) // self._interval_ns + 1) * self._interval_ns
        return [self._finish(g, t0, t1, w0, w1) for g in gpus]

    def _mark_boundary(self) -> tuple[int, int]:
        self.poll_clocks()
        self._last = (self._mono(), self._wall())
        return self._last

    def _start(self, g: _Gpu) -> None:
        """Take the first interval's starting readings of one GPU."""
        if g.gpm:
            g.have_base = self._gpm_sample(g) is None
        g.putil_ts = self._last[1] // 1000
        self._carry(g)

    def _carry(self, g: _Gpu) -> tuple[int | None, list[int]]:
        """Read energy and running processes at a boundary; return those of the previous one."""
        nv = self._lib()
        before = (g.energy_mj, g.running)
        mj = self._optional(nv.nvmlDeviceGetTotalEnergyConsumption, g.handle)
        procs = self._optional(nv.nvmlDeviceGetComputeRunningProcesses, g.handle)
        g.energy_mj = None if mj is None else int(mj)
        g.running = sorted({int(p.pid) for p in procs or ()})
        return before

    def _finish(self, g: _Gpu, t0: int, t1: int, w0: int, w1: int) -> GpuReading:
        """Readings of one GPU for the interval that ends now; they start the next one too."""
        busy, gpm_error = self._gpm_busy(g) if g.gpm else (None, None)
        clock, n_clock, clock_error = self._take_clock(g, t0, t1)
        utilization = self._optional(self._lib().nvmlDeviceGetUtilizationRates, g.handle)
        util = None if utilization is None else float(utilization.gpu) / 100.0
        util_error = None if g.gpm or util is not None else "NVML utilization unavailable"
        e0, before = self._carry(g)
        e1 = g.energy_mj  # None where unsupported; a counter that went back (driver reload) too
        energy = e1 - e0 if e0 is not None and e1 is not None and e1 >= e0 else None
        return GpuReading(
            gpu=g.info,
            start_ns=w0,
            end_ns=w1,
            pipe_busy=busy,
            sm_clock_mhz_s=clock,
            clock_samples=n_clock,
            energy_mj=energy,
            utilization=util,
            processes=shares_from_samples(self._process_samples(g), g.running, before),
            error=gpm_error or clock_error or util_error,
        )

    # -- one GPU's readings -------------------------------------------------------------------

    def _gpm_sample(self, g: _Gpu) -> str | None:
        """Take a GPM sample into the current buffer and flip buffers; the error if NVML failed."""
        nv = self._lib()
        try:
            nv.nvmlGpmSampleGet(g.handle, g.samples[g.cur])
        except nv.NVMLError as e:
            return f"GPM sample failed: {e}"
        g.cur = 1 - g.cur
        return None

    def _gpm_busy(self, g: _Gpu) -> tuple[dict[Pipe, float] | None, str | None]:
        """Per-pipe busy fractions (0..1) between the interval's two GPM samples, or an error."""
        nv = self._lib()
        had_base = g.have_base
        error = self._gpm_sample(g)
        if error is not None:
            # Retry once so that the next interval has a baseline; this one is a gap either way.
            g.have_base = self._gpm_sample(g) is None
            return None, error
        g.have_base = True
        if not had_base:
            return None, "no GPM sample at the interval start (earlier GPM failure)"
        mg = nv.c_nvmlGpmMetricsGet_t()
        mg.version = nv.NVML_GPM_METRICS_GET_VERSION
        mg.sample1 = g.samples[g.cur]  # flipped above: the older sample
        mg.sample2 = g.samples[1 - g.cur]
        pipes = list(GPM_PIPE_METRICS.items())
        mg.numMetrics = len(pipes)
        for i, (_, metric_id) in enumerate(pipes):
            mg.metrics[i].metricId = metric_id
        try:
            nv.nvmlGpmMetricsGet(mg)
        except nv.NVMLError as e:
            return None, f"GPM metrics failed: {e}"
        busy: dict[Pipe, float] = {}
        for i, (pipe, metric_id) in enumerate(pipes):
            m = mg.metrics[i]
            value = float(m.value)
            if m.nvmlReturn != nv.NVML_SUCCESS or not math.isfinite(value):
                return None, f"GPM metric {metric_id} ({pipe.value}) failed: code {m.nvmlReturn}"
            busy[pipe] = min(max(value / 100.0, 0.0), 1.0)
        return busy, None

    def _process_samples(self, g: _Gpu) -> list[tuple[int, float]]:
        """(pid, SM %) samples NVML took since the last call; empty where it has none."""
        nv = self._lib()
        try:
            rows = nv.nvmlDeviceGetProcessUtilization(g.handle, g.putil_ts)
        except nv.NVMLError as e:
            # NOT_FOUND, and SUCCESS raised by pynvml for an empty buffer, mean "no samples".
            if not (self._code(e, "NVML_ERROR_NOT_FOUND") or self._code(e, "NVML_SUCCESS")):
                log.debug("GPU %d: process utilization failed: %s", g.info.index, e)
            return []
        fresh = [r for r in rows if int(r.timeStamp) > g.putil_ts]
        if fresh:
            g.putil_ts = max(int(r.timeStamp) for r in fresh)
        return [(int(r.pid), float(r.smUtil)) for r in fresh]

    def close(self) -> None:
        """Stop the clock poller, free the GPM samples and shut NVML down (idempotent)."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        gpus, self._gpus = self._gpus, None
        if gpus is None:
            return
        nv = self._lib()
        for s in (s for g in gpus for s in g.samples):
            try:
                nv.nvmlGpmSampleFree(s)
            except nv.NVMLError as e:
                log.warning("freeing a GPM sample failed: %s", e)
        self._shutdown()

    def _shutdown(self) -> None:
        nv = self._lib()
        try:
            nv.nvmlShutdown()
        except nv.NVMLError as e:
            log.warning("nvmlShutdown failed: %s", e)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
