"""GPM pipe utilization of one measured device: a whole GPU, or one MIG instance of it.

Two GPM sample buffers alternate: the sample that ends one interval starts the next. A whole GPU
or a MIG device (a compute instance) is sampled with nvmlGpmSampleGet(its handle); a GPU
instance as a whole with nvmlGpmMigSampleGet(handle of its GPU, GPU instance id) (mig.py says
when). NVML wants two samples more than 100 ms apart (MIN_INTERVAL_S).

Only the metrics of the pipes the FLOP model gives this GPU a rate for are requested
(`gpm_metrics_for`); each of those must succeed, since a pipe whose busy fraction is unknown
could hold any amount of work: one failed metric makes the interval a gap. A pipe the model
gives no rate (its work counts for nothing in any figure) is not read at all.

Failures and their gap causes:
- NVML_ERROR_IN_USE: PROFILER_BUSY (another client holds a resource GPM needs). NVML documents
  no GPM code for this, and none is expected: GPM reads its own counters, not the perfmon unit
  that Nsight Compute and DCGM's pre-Hopper profiling lock (NVIDIA/DCGM#62), and DCGM (so
  dcgm-exporter) reads its Hopper profiling fields through GPM itself, with its own samples.
  Both sample side by side; neither blocks the other.
- anything else: SAMPLING_ERROR. A device whose first GPM_UNSUPPORTED_STRIKES sample attempts
  all fail with a "not supported"-like code (GPM_UNSUPPORTED_CODES) and that never gave one
  sample is `never_works`: NVML said GPM is supported but cannot sample it (vGPU guests,
  NVIDIA/dcgm-exporter#661); the backend then measures it another way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flopwatch.agent.backends.base import GapCause
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.agent.backends.nvml.lib import Nvml
from flopwatch.model import Pipe
from flopwatch.model.flops import fastest_rates

# NVML: "the interval between two nvmlGpmSampleGet() calls should be greater than 100 ms";
# the agent's interval must be longer than this (refused otherwise), its boundaries lie further
# apart than this.
MIN_INTERVAL_S = 0.1
# The NVML return code a GPM call would give while another client holds what GPM needs.
PROFILER_CODES = ("NVML_ERROR_IN_USE",)
# Codes with which a device that never gave a GPM sample is taken as unable to give any.
GPM_UNSUPPORTED_CODES = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_INVALID_ARGUMENT",
)
# Failed sample attempts in a row, from the very first, before GPM is given up on a device.
GPM_UNSUPPORTED_STRIKES = 3


def gpm_metrics_for(cc: tuple[int, int]) -> Mapping[Pipe, int]:
    """GPM metric ids of the pipes the FLOP model gives a GPU of compute capability `cc` a rate
    for (every pipe for a GPU the rate table does not know)."""
    rates = fastest_rates(cc)
    return MappingProxyType({p: m for p, m in GPM_PIPE_METRICS.items() if rates[p] > 0})


@dataclass(frozen=True)
class ReadFailure:
    """Why a device's interval was not measured (GPM, or any other reading it needs)."""

    message: str
    cause: GapCause = GapCause.SAMPLING_ERROR


Busy = tuple[dict[Pipe, float] | None, ReadFailure | None]


@dataclass
class GpmSampler:
    """Alternating GPM samples of one device, or of a GPU instance (`gpu_instance` set).

    `handle` is the device's own handle (a whole GPU's, or a MIG device's), or for a GPU
    instance its GPU's handle. `at_ns` arguments (the boundary's monotonic time) matter only to
    SharedGpm; a GpmSampler samples at every call.
    """

    nvml: Nvml
    handle: Any
    metrics: Mapping[Pipe, int]  # GPM metric id of each pipe to read (gpm_metrics_for)
    gpu_instance: int | None = None
    samples: list[Any] = field(default_factory=list)
    cur: int = 0  # the buffer the next sample goes into
    have_base: bool = False  # the other buffer holds the sample taken at the interval start
    sampled_ever: bool = False
    strikes: int = 0  # "not supported"-like failures since the start, while never sampled

    def alloc(self) -> None:
        """Allocate both sample buffers (once)."""
        if not self.samples:
            nv = self.nvml.lib
            self.samples = [nv.nvmlGpmSampleAlloc()]
            self.samples.append(nv.nvmlGpmSampleAlloc())

    def free(self) -> list[str]:
        """Free both buffers (once); the errors NVML gave, if any."""
        errors = []
        for s in self.samples:
            try:
                self.nvml.lib.nvmlGpmSampleFree(s)
            except self.nvml.error as e:
                errors.append(str(e))
        self.samples = []
        return errors

    @property
    def never_works(self) -> bool:
        """NVML could not give one sample, failing each time as if GPM were unsupported."""
        return not self.sampled_ever and self.strikes >= GPM_UNSUPPORTED_STRIKES

    def probe(self) -> BaseException | None:
        """Take one sample that no interval uses; what NVML raised, if it failed."""
        try:
            self._get(self.samples[self.cur])
        except self.nvml.error as e:
            return e
        return None

    def start(self, at_ns: int = 0) -> None:
        """Take the sample the first interval starts from."""
        self.have_base = self._sample() is None

    def unsupported(self, e: BaseException) -> bool:
        return self.nvml.is_code(e, *GPM_UNSUPPORTED_CODES)

    def _failure(self, what: str, e: BaseException) -> ReadFailure:
        if self.nvml.is_code(e, *PROFILER_CODES):
            return ReadFailure(f"{what}: in use by another client: {e}", GapCause.PROFILER_BUSY)
        return ReadFailure(f"{what}: {e}")

    def _get(self, buffer: Any) -> None:
        nv = self.nvml.lib
        if self.gpu_instance is None:
            nv.nvmlGpmSampleGet(self.handle, buffer)
        else:
            nv.nvmlGpmMigSampleGet(self.handle, self.gpu_instance, buffer)

    def _sample(self) -> ReadFailure | None:
        """Take a sample into the current buffer and flip buffers; the failure if NVML failed."""
        try:
            self._get(self.samples[self.cur])
        except self.nvml.error as e:
            if not self.sampled_ever and self.unsupported(e):
                self.strikes += 1
            return self._failure("GPM sample failed", e)
        self.sampled_ever = True
        self.cur = 1 - self.cur
        return None

    def busy(self, at_ns: int = 0) -> Busy:
        """Per-pipe busy fractions (0..1) since the last call (or `start`), or the failure."""
        had_base = self.have_base
        failure = self._sample()
        if failure is not None:
            # Retry once so that the next interval has a baseline; this one is a gap either way.
            self.have_base = self._sample() is None
            return None, failure
        self.have_base = True
        if not had_base:
            return None, ReadFailure("no GPM sample at the interval start (earlier GPM failure)")
        return self._metrics(older=self.samples[self.cur], newer=self.samples[1 - self.cur])

    def _metrics(self, older: Any, newer: Any) -> Busy:
        nv = self.nvml.lib
        mg = nv.c_nvmlGpmMetricsGet_t()
        mg.version = nv.NVML_GPM_METRICS_GET_VERSION
        mg.sample1, mg.sample2 = older, newer
        pipes = list(self.metrics.items())
        mg.numMetrics = len(pipes)
        for i, (_, metric_id) in enumerate(pipes):
            mg.metrics[i].metricId = metric_id
        try:
            nv.nvmlGpmMetricsGet(mg)
        except self.nvml.error as e:
            return None, self._failure("GPM metrics failed", e)
        busy: dict[Pipe, float] = {}
        for i, (pipe, metric_id) in enumerate(pipes):
            m = mg.metrics[i]
            code, value = m.nvmlReturn, float(m.value)
            if code != nv.NVML_SUCCESS or not math.isfinite(value):
                busy_elsewhere = self.nvml.code_is(code, *PROFILER_CODES)
                cause = GapCause.PROFILER_BUSY if busy_elsewhere else GapCause.SAMPLING_ERROR
                return None, ReadFailure(
                    f"GPM metric {metric_id} ({pipe.value}) failed: code {code}, value {value}",
                    cause,
                )
            busy[pipe] = min(max(value / 100.0, 0.0), 1.0)
        return busy, None


@dataclass
class SharedGpm:
    """One GPM source read by several devices: the compute instances of one GPU instance when
    NVML samples only the GPU instance (mig.py). It samples once per boundary (`at_ns`) and
    gives every device the same answer."""

    sampler: GpmSampler
    _started: bool = False
    _last: tuple[int, Busy] | None = None

    def alloc(self) -> None:
        self.sampler.alloc()

    def free(self) -> list[str]:
        return self.sampler.free()

    @property
    def never_works(self) -> bool:
        return self.sampler.never_works

    def start(self, at_ns: int = 0) -> None:
        if not self._started:
            self._started = True
            self.sampler.start()

    def busy(self, at_ns: int = 0) -> Busy:
        if self._last is None or self._last[0] != at_ns:
            self._last = (at_ns, self.sampler.busy())
        busy, failure = self._last[1]
        return (None if busy is None else dict(busy)), failure


GpmSource = GpmSampler | SharedGpm
