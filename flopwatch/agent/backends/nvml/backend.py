"""The real GPU backend: NVML GPM pipe utilization, an integrated SM clock, energy and processes.

Each measured device is a whole GPU, or one MIG instance of a GPU in MIG mode (mig.py).
Per interval and device:
- GPM busy fractions per pipe (gpm.py) on Hopper and later;
- without GPM (compute capability < 9.0, NVML says unsupported, or NVML says supported but has
  never given a sample: vGPU guests), a bound on the kernel-busy fraction from NVML's
  utilization samples (utilization.py); such a GPU's intervals end at its newest sample, so they
  may end up to one sample period before the agent's boundary;
- the SM clock polled at ~10 Hz and integrated (clock.py), energy as the difference of the
  total-energy counter (whole GPUs), and the running processes with their SM-utilization shares
  (processes.py drops pids no process can have).
An NVML error in the essential readings yields a reading with `error` set (and its cause), which
the agent signs as a gap; it never stops the sampling of the other devices or of the next one.
No exception of an NVML call escapes the backend other than as a BackendError (or
NvmlUnavailableError) from setup, after which NVML is shut down again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flopwatch.agent.backends.base import (
    GapCause,
    GpuInfo,
    GpuReading,
    HardwareBinding,
    shares_from_samples,
)
from flopwatch.agent.backends.nvml.cc import hardware_bindings
from flopwatch.agent.backends.nvml.clock import DEFAULT_CLOCK_POLL_S, ClockPoller, integrate_clock
from flopwatch.agent.backends.nvml.gpm import (
    MIN_INTERVAL_S,
    GpmSampler,
    GpmSource,
    ReadFailure,
    gpm_metrics_for,
)
from flopwatch.agent.backends.nvml.ids import cores_per_sm
from flopwatch.agent.backends.nvml.lib import LIBRARY_NOT_FOUND, Nvml, text
from flopwatch.agent.backends.nvml.mig import mig_enabled, mig_gpm, mig_instances
from flopwatch.agent.backends.nvml.processes import plausible_pids, read_pid_max, running_pids
from flopwatch.agent.backends.nvml.utilization import (
    STALL_INTERVALS,
    BusySpan,
    UtilizationWindow,
    fetch_samples,
)
from flopwatch.errors import BackendError

__all__ = ["LIBRARY_NOT_FOUND", "MIN_INTERVAL_S", "NvmlBackend", "integrate_clock"]

log = logging.getLogger(__name__)

GPM_MIN_CC = (9, 0)  # NVML GPM exists from Hopper on
MIG_WITHOUT_GPM = "MIG instance of a GPU without GPM: NVML has no per-instance activity reading"
MIG_GPM_NEVER_WORKS = "NVML could not give one GPM sample of this MIG instance: not measurable"


@dataclass
class _Device:
    """One measured device and the state carried from one interval to the next."""

    info: GpuInfo
    handle: Any  # this device's handle (a MIG device handle for an instance)
    gpu: int  # NVML index of its physical GPU: the SM clock it runs at
    gpm: GpmSource | None = None
    util: UtilizationWindow | None = None  # a whole GPU without GPM
    unmeasurable: str | None = None  # why every interval is a gap
    energy_mj: int | None = None
    running: list[int] = field(default_factory=list)
    putil_ts: int = 0  # NVML per-process utilization: last timestamp seen (unix us)


class NvmlBackend:
    """GpuBackend over the real NVML library (pynvml, package nvidia-ml-py).

    `nvml` injects the module (tests pass a fake); None imports pynvml on first use. Time is
    injectable: `monotonic_ns` paces the schedule and stamps clock samples, `time_ns` gives the
    unix times readings carry, `sleep` waits for interval boundaries. With `clock_thread=False`
    no poller thread runs and the caller drives `poll_clocks()` itself (tests). `pid_max`:
    pids at or above it are dropped (None: the kernel's, read on first use).
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        nvml: Any = None,
        *,
        clock_poll_s: float = DEFAULT_CLOCK_POLL_S,
        clock_thread: bool = True,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        time_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        pid_max: int | None = None,
    ) -> None:
        if not interval_s > MIN_INTERVAL_S:
            raise ValueError(
                f"interval_s must be more than {MIN_INTERVAL_S} s: NVML needs GPM samples more "
                f"than {MIN_INTERVAL_S * 1000:.0f} ms apart"
            )
        if clock_poll_s <= 0:
            raise ValueError("clock_poll_s must be positive")
        self._pid_max = pid_max
        self._interval_ns = round(interval_s * 1e9)
        self._nvml = Nvml(nvml)
        self._clock_poll_s = clock_poll_s
        self._clock_thread = clock_thread
        self._mono = monotonic_ns
        self._wall = time_ns
        self._sleep = sleep
        self._devices: list[_Device] | None = None
        self._physical: list[tuple[GpuInfo, Any]] = []  # (identity, handle) per physical GPU
        self._clock: ClockPoller | None = None
        self._next_ns = 0  # monotonic time of the next interval boundary; 0 before the first
        self._last = (0, 0)  # (monotonic ns, unix ns) of the last boundary
        self._closed = False

    # -- setup ---------------------------------------------------------------------------------

    def _open(self) -> list[_Device]:
        if self._devices is not None:
            return self._devices
        if self._closed:
            raise BackendError("the NVML backend is closed")
        nv = self._nvml.lib
        if self._pid_max is None:
            self._pid_max = read_pid_max()
        self._nvml.init()
        self._physical = []
        devices: list[_Device] = []
        ready = False
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                devices += self._identify(i)
            for d in devices:
                if d.gpm is not None:
                    d.gpm.alloc()
            if not devices:
                raise BackendError("NVML reports no GPU (and no MIG instance) to measure")
            ready = True
        except self._nvml.error as e:
            raise BackendError(f"cannot set up the GPUs through NVML: {e}") from e
        finally:
            if not ready:  # whatever went wrong: free what was allocated, shut NVML down
                self._free_gpm(devices)
                self._nvml.shutdown()
        for d in devices:
            if d.util is not None:
                log.warning(
                    "GPU %d (%s, cc %d.%d) has no GPM: FLOPs from utilization samples "
                    "(method nvml-utilization, wide bounds)",
                    d.info.index,
                    d.info.name,
                    *d.info.cc,
                )
        self._devices = devices
        handles = {i: h for i, (_, h) in enumerate(self._physical)}
        self._clock = ClockPoller(self._nvml, handles, self._mono)
        if self._clock_thread:
            self._clock.start(self._clock_poll_s)
        return devices

    def _identify(self, index: int) -> list[_Device]:
        """The devices GPU `index` is measured as: itself, or each of its MIG instances."""
        nvml, nv = self._nvml, self._nvml.lib
        h = nv.nvmlDeviceGetHandleByIndex(index)
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
        cc = (int(major), int(minor))
        gpu = GpuInfo(
            uuid=text(nv.nvmlDeviceGetUUID(h)),
            name=text(nv.nvmlDeviceGetName(h)),
            sm_count=int(nv.nvmlDeviceGetNumGpuCores(h)) // cores_per_sm(cc),
            cc=cc,
            max_sm_clock_mhz=int(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
            index=index,
            serial=text(nvml.optional(nv.nvmlDeviceGetSerial, h) or ""),
        )
        self._physical.append((gpu, h))
        support = nvml.optional(nv.nvmlGpmQueryDeviceSupport, h) if cc >= GPM_MIN_CC else None
        gpm = bool(support and support.isSupportedDevice)
        metrics = gpm_metrics_for(cc)
        if not mig_enabled(nvml, h):
            if gpm:
                return [_Device(gpu, h, index, gpm=GpmSampler(nvml, h, metrics))]
            return [_Device(gpu, h, index, util=UtilizationWindow(start_ns=0))]
        instances = mig_instances(nvml, h)
        sources: list[GpmSource | None] = [None] * len(instances)
        if gpm:
            sources = list(mig_gpm(nvml, h, instances, metrics))
        out = []
        for m, source in zip(instances, sources, strict=True):
            info = GpuInfo(
                uuid=gpu.uuid,
                name=m.name,
                sm_count=m.sm_count,
                cc=cc,
                max_sm_clock_mhz=gpu.max_sm_clock_mhz,
                index=index,
                serial=gpu.serial,
                mig_instance=m.uuid,
            )
            reason = None if gpm else MIG_WITHOUT_GPM
            out.append(_Device(info, m.handle, index, gpm=source, unmeasurable=reason))
        return out

    # -- intervals -------------------------------------------------------------------------------

    def gpus(self) -> Sequence[GpuInfo]:
        return tuple(d.info for d in self._open())

    def poll_clocks(self) -> None:
        """Read every GPU's SM clock once (what the poller thread does every 0.1 s)."""
        if self._clock is not None:
            self._clock.poll()

    def next_readings(self) -> list[GpuReading] | None:
        """Block until the next interval boundary, then return the readings that are ready.

        Boundaries lie on a fixed monotonic schedule (start + k x interval), so intervals do not
        drift; a caller late by more than an interval gets one longer interval, then the schedule
        resumes. A GPU without GPM has no reading at a boundary before its next utilization
        sample (its interval then covers more than one boundary). None once closed.
        """
        if self._closed:
            return None
        devices = self._open()
        if self._next_ns == 0:
            self._mark_boundary()
            for d in devices:
                self._start(d)
            self._next_ns = self._last[0] + self._interval_ns
        delay = self._next_ns - self._mono()
        if delay > 0:
            self._sleep(delay / 1e9)
        (t0, w0), (t1, w1) = self._last, self._mark_boundary()
        self._next_ns = self._next_boundary(t1)
        readings = [r for d in devices if (r := self._finish(d, t0, t1, w0, w1)) is not None]
        self._trim_clocks(devices, t1, w1)
        return readings

    def _next_boundary(self, t1: int) -> int:
        """The first boundary of the schedule more than MIN_INTERVAL_S after `t1` (a late caller
        skips the boundaries it missed; NVML needs GPM samples more than 100 ms apart)."""
        nxt = self._next_ns + self._interval_ns
        min_gap = round(MIN_INTERVAL_S * 1e9)
        if nxt - t1 <= min_gap:
            nxt += ((t1 + min_gap - nxt) // self._interval_ns + 1) * self._interval_ns
        return nxt

    def _mark_boundary(self) -> tuple[int, int]:
        self.poll_clocks()
        self._last = (self._mono(), self._wall())
        return self._last

    def _trim_clocks(self, devices: Sequence[_Device], t1: int, w1: int) -> None:
        assert self._clock is not None
        keep: dict[int, int] = {}
        for d in devices:
            start = t1 if d.util is None else d.util.start_ns - (w1 - t1)
            keep[d.gpu] = min(keep.get(d.gpu, start), start)
        for gpu, keep_from in keep.items():
            self._clock.trim(gpu, keep_from)

    def _start(self, d: _Device) -> None:
        """Take the first interval's starting readings of one device."""
        if d.gpm is not None:
            d.gpm.start(self._last[0])
        if d.util is not None:
            d.util.start_ns = self._last[1]
            samples = fetch_samples(self._nvml, d.handle, 0)
            d.util.add(samples if isinstance(samples, list) else ())
        d.putil_ts = self._last[1] // 1000
        self._carry(d)

    def _carry(self, d: _Device) -> tuple[int | None, list[int]]:
        """Read energy and running processes at a boundary; return those of the previous one."""
        nvml, nv = self._nvml, self._nvml.lib
        before = (d.energy_mj, d.running)
        if not d.info.mig_instance:  # NVML has no energy counter per MIG instance
            mj = nvml.optional(nv.nvmlDeviceGetTotalEnergyConsumption, d.handle)
            d.energy_mj = None if mj is None else int(mj)
        assert self._pid_max is not None
        d.running = running_pids(nvml, d.handle, self._pid_max, self._where(d))
        return before

    @staticmethod
    def _where(d: _Device) -> str:
        return f"GPU {d.info.index}" + (f" {d.info.mig_instance}" if d.info.mig_instance else "")

    def _busy_span(self, d: _Device, w1: int) -> BusySpan | str | None:
        """A no-GPM GPU's next interval and busy bound; None: not yet; str: a gap up to w1."""
        assert d.util is not None
        samples = fetch_samples(self._nvml, d.handle, d.util.last_seen_us)
        if isinstance(samples, str):
            return samples
        d.util.add(samples)
        span = d.util.take(w1)
        if span is None and w1 - d.util.start_ns > STALL_INTERVALS * self._interval_ns:
            return f"no NVML utilization sample for over {STALL_INTERVALS} intervals"
        return span

    def _finish(self, d: _Device, t0: int, t1: int, w0: int, w1: int) -> GpuReading | None:
        """Readings of one device for the interval that ends now; they start the next one too."""
        busy = None
        failure: ReadFailure | None = None
        util: float | None = None
        if d.unmeasurable is not None:
            failure = ReadFailure(d.unmeasurable)
        elif d.gpm is not None:
            busy, failure = d.gpm.busy(t1)
        else:
            assert d.util is not None
            span = self._busy_span(d, w1)
            if span is None:
                return None  # carried on: energy and processes stay with the pending interval
            if isinstance(span, str):
                failure, w0 = ReadFailure(span), d.util.start_ns
                d.util.skip_to(w1)
            else:  # the interval ends at the newest utilization sample, not at the boundary
                off = w1 - t1  # unix ns minus monotonic ns at this boundary
                util, w0, w1 = span.busy_fraction, span.start_ns, span.end_ns
                t0, t1 = w0 - off, w1 - off
        assert self._clock is not None
        clock, n_clock, clock_error = self._clock.integrate(d.gpu, t0, t1)
        e0, before = self._carry(d)
        e1 = d.energy_mj  # None where unsupported; a counter that went back (driver reload) too
        error = failure.message if failure else clock_error
        if d.gpm is not None and d.gpm.never_works:
            self._give_up_gpm(d, w1)
        return GpuReading(
            gpu=d.info,
            start_ns=w0,
            end_ns=w1,
            pipe_busy=busy,
            sm_clock_mhz_s=0.0 if error else clock,
            clock_samples=n_clock,
            energy_mj=e1 - e0 if e0 is not None and e1 is not None and e1 >= e0 else None,
            utilization=util,
            processes=shares_from_samples(self._process_samples(d), d.running, before),
            error=error,
            cause=failure.cause if failure else GapCause.SAMPLING_ERROR,
        )

    def _give_up_gpm(self, d: _Device, w1: int) -> None:
        """NVML said the device has GPM but never gave a sample (vGPU guests): measure it from
        utilization samples from `w1` (unix ns, the end of the gap just signed) on; a MIG
        instance has no such fallback and is signed as a gap from then on."""
        self._free_gpm([d])
        d.gpm = None
        if d.info.mig_instance:
            d.unmeasurable = MIG_GPM_NEVER_WORKS
            log.warning("%s: %s", self._where(d), MIG_GPM_NEVER_WORKS)
            return
        log.warning(
            "%s (%s): NVML says it has GPM but could not give one GPM sample (a vGPU guest?): "
            "FLOPs from utilization samples from now on (method nvml-utilization, wide bounds)",
            self._where(d),
            d.info.name,
        )
        d.util = UtilizationWindow(start_ns=w1)
        samples = fetch_samples(self._nvml, d.handle, 0)
        d.util.add(samples if isinstance(samples, list) else ())

    def _process_samples(self, d: _Device) -> list[tuple[int, float]]:
        """(pid, SM %) samples NVML took since the last call; empty where it has none."""
        nvml = self._nvml
        try:
            rows = nvml.lib.nvmlDeviceGetProcessUtilization(d.handle, d.putil_ts)
        except nvml.error as e:
            # NOT_FOUND, and SUCCESS raised by pynvml for an empty buffer, mean "no samples".
            if not nvml.is_code(
                e, "NVML_ERROR_NOT_FOUND", "NVML_SUCCESS", "NVML_ERROR_NOT_SUPPORTED"
            ):
                log.debug("GPU %d: process utilization failed: %s", d.info.index, e)
            return []
        fresh = [r for r in rows if int(r.timeStamp) > d.putil_ts]
        if fresh:
            d.putil_ts = max(int(r.timeStamp) for r in fresh)
        assert self._pid_max is not None
        ok = set(plausible_pids((r.pid for r in fresh), self._pid_max, self._where(d)))
        return [(int(r.pid), float(r.smUtil)) for r in fresh if int(r.pid) in ok]

    # -- hardware binding and shutdown -----------------------------------------------------------

    def hardware_bindings(self, nonce: bytes) -> list[HardwareBinding]:
        """Each physical GPU's confidential-computing report over `nonce`, or why there is none."""
        self._open()
        return hardware_bindings(self._nvml, self._physical, nonce)

    def close(self) -> None:
        """Stop the clock poller, free the GPM samples and shut NVML down (idempotent)."""
        self._closed = True
        if self._clock is not None:
            self._clock.stop()
        devices, self._devices = self._devices, None
        if devices is None:
            return
        self._free_gpm(devices)
        self._nvml.shutdown()

    @staticmethod
    def _free_gpm(devices: Sequence[_Device]) -> None:
        for d in devices:
            for e in d.gpm.free() if d.gpm is not None else ():
                log.warning("freeing a GPM sample failed: %s", e)
