"""GPM pipe utilization of one measured device: a whole GPU, or one MIG instance of it.

Two GPM sample buffers alternate: the sample that ends one interval starts the next. A whole GPU
is sampled with nvmlGpmSampleGet(handle), a MIG instance with nvmlGpmMigSampleGet(handle of its
GPU, GPU instance id). A failure is reported with its cause: NVML_ERROR_IN_USE means another
client (a profiler) holds the counters, anything else is a sampling error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flopwatch.agent.backends.base import GapCause
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.agent.backends.nvml.lib import Nvml
from flopwatch.model import Pipe

# The NVML return code a GPM call gives while another client holds the counters.
PROFILER_CODES = ("NVML_ERROR_IN_USE",)


@dataclass(frozen=True)
class ReadFailure:
    """Why a device's interval was not measured (GPM, or any other reading it needs)."""

    message: str
    cause: GapCause = GapCause.SAMPLING_ERROR


@dataclass
class GpmSampler:
    """Alternating GPM samples of one device; `gpu_instance` set for a MIG instance."""

    nvml: Nvml
    handle: Any  # the whole GPU's handle, also for a MIG instance
    gpu_instance: int | None = None
    samples: list[Any] = field(default_factory=list)
    cur: int = 0  # the buffer the next sample goes into
    have_base: bool = False  # the other buffer holds the sample taken at the interval start

    def alloc(self) -> None:
        nv = self.nvml.lib
        self.samples = [nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()]

    def free(self) -> list[str]:
        """Free both buffers; the errors NVML gave, if any."""
        errors = []
        for s in self.samples:
            try:
                self.nvml.lib.nvmlGpmSampleFree(s)
            except self.nvml.error as e:
                errors.append(str(e))
        self.samples = []
        return errors

    def start(self) -> None:
        """Take the sample the first interval starts from."""
        self.have_base = self._sample() is None

    def _failure(self, what: str, e: BaseException) -> ReadFailure:
        if self.nvml.is_code(e, *PROFILER_CODES):
            return ReadFailure(
                f"{what}: counters held by another client: {e}", GapCause.PROFILER_BUSY
            )
        return ReadFailure(f"{what}: {e}")

    def _sample(self) -> ReadFailure | None:
        """Take a sample into the current buffer and flip buffers; the failure if NVML failed."""
        nv = self.nvml.lib
        try:
            if self.gpu_instance is None:
                nv.nvmlGpmSampleGet(self.handle, self.samples[self.cur])
            else:
                nv.nvmlGpmMigSampleGet(self.handle, self.gpu_instance, self.samples[self.cur])
        except self.nvml.error as e:
            return self._failure("GPM sample failed", e)
        self.cur = 1 - self.cur
        return None

    def busy(self) -> tuple[dict[Pipe, float] | None, ReadFailure | None]:
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

    def _metrics(
        self, older: Any, newer: Any
    ) -> tuple[dict[Pipe, float] | None, ReadFailure | None]:
        nv = self.nvml.lib
        mg = nv.c_nvmlGpmMetricsGet_t()
        mg.version = nv.NVML_GPM_METRICS_GET_VERSION
        mg.sample1, mg.sample2 = older, newer
        pipes = list(GPM_PIPE_METRICS.items())
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
            value = float(m.value)
            if m.nvmlReturn != nv.NVML_SUCCESS or not math.isfinite(value):
                code = m.nvmlReturn
                cause = (
                    GapCause.PROFILER_BUSY
                    if code == getattr(nv, PROFILER_CODES[0], object())
                    else GapCause.SAMPLING_ERROR
                )
                return None, ReadFailure(
                    f"GPM metric {metric_id} ({pipe.value}) failed: code {code}", cause
                )
            busy[pipe] = min(max(value / 100.0, 0.0), 1.0)
        return busy, None
