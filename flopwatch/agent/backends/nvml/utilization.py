"""Kernel-busy time of a GPU without GPM, bounded from NVML's utilization samples.

The driver keeps a buffer of utilization samples (nvmlDeviceGetSamples with
NVML_GPU_UTILIZATION_SAMPLES): sample k, stamped t_k (unix microseconds), says that during a
fraction u_k of its sample period (t_{k-1}, t_k] one or more kernels ran on the GPU. A period
lasts between 1/6 s and 1 s depending on the product, so it does not line up with the agent's
interval boundaries. This module therefore ends each interval of such a GPU at the newest
sample (the next interval starts there), so that every period lies wholly inside one interval,
and bounds the busy time of [start, end) by

    busy <= sum over samples k in (start, end] of min(|(t_{k-1}, t_k] & (start, end]|,
                                                      u_k x (t_k - t_{k-1}))

where a period whose start is unknown (the first sample ever seen) counts as busy for its whole
overlap. Inside whole periods this is exactly sum u_k x period; only a period cut by `start`
(the first interval, or the one after a stall) is counted conservatively.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flopwatch.agent.backends.nvml.lib import Nvml

# Intervals without a new utilization sample before the silence is signed as a gap.
STALL_INTERVALS = 3
# How far past the agent's clock a sample may be stamped before its timestamps are not trusted.
MAX_SAMPLE_SKEW_NS = 2 * 10**9

_VALUE_FIELDS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


@dataclass(frozen=True)
class BusySpan:
    """[start_ns, end_ns) and the bound on the fraction of it during which kernels ran."""

    start_ns: int
    end_ns: int
    busy_fraction: float


def fetch_samples(nvml: Nvml, handle: Any, since_us: int) -> list[tuple[int, float]] | str:
    """(timestamp us, percent) samples newer than `since_us`, or why there are none to have.

    NOT_FOUND means "no new sample" and gives an empty list.
    """
    nv = nvml.lib
    try:
        kind, rows = nv.nvmlDeviceGetSamples(handle, nv.NVML_GPU_UTILIZATION_SAMPLES, since_us)
    except nvml.error as e:
        if nvml.is_code(e, "NVML_ERROR_NOT_FOUND"):
            return []
        if nvml.is_code(e, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
            return "no GPM and no NVML utilization samples: this GPU's work cannot be bounded"
        return f"NVML utilization samples failed: {e}"
    name = _VALUE_FIELDS[int(kind)] if 0 <= int(kind) < len(_VALUE_FIELDS) else "uiVal"
    return [(int(r.timeStamp), float(getattr(r.sampleValue, name))) for r in rows]


@dataclass
class UtilizationWindow:
    """Utilization samples of one GPU not yet turned into an interval.

    `start_ns` is where the next interval begins (unix ns). `prev_ns` is the timestamp of the
    newest sample at or before it: the start of the first pending sample's period.
    """

    start_ns: int
    last_seen_us: int = 0
    prev_ns: int | None = None
    pending: list[tuple[int, float]] = field(default_factory=list)  # (ts ns, percent)

    def add(self, samples: Iterable[tuple[int, float]]) -> None:
        for ts_us, percent in sorted(samples):
            if ts_us <= self.last_seen_us:
                continue
            self.last_seen_us = ts_us
            ts = ts_us * 1000
            if ts <= self.start_ns:
                self.prev_ns = ts
            else:
                self.pending.append((ts, min(max(percent, 0.0), 100.0)))

    def take(self, now_ns: int) -> BusySpan | str | None:
        """The interval up to the newest sample and its busy bound; None while no sample is new;
        an error message when sample timestamps run ahead of the agent's clock."""
        if not self.pending:
            return None
        end = self.pending[-1][0]
        if end > now_ns + MAX_SAMPLE_SKEW_NS:
            self.pending = []
            return "NVML utilization sample timestamps run ahead of the system clock"
        busy = 0.0  # percent x ns
        prev = self.prev_ns
        for ts, percent in self.pending:
            overlap = ts - max(self.start_ns, prev if prev is not None else self.start_ns)
            busy += 100.0 * overlap if prev is None else min(100.0 * overlap, percent * (ts - prev))
            prev = ts
        span = BusySpan(self.start_ns, end, min(1.0, busy / (100.0 * (end - self.start_ns))))
        self.start_ns, self.prev_ns, self.pending = end, end, []
        return span

    def skip_to(self, ns: int) -> None:
        """Start the next interval at `ns` (after the stretch before it was signed as a gap)."""
        self.start_ns = ns
