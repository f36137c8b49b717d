"""Per-interval and per-job figures under each measurement method. Pure.

The agent computes these when it signs; the collector and the offline verifier recompute them
from the raw counters in the record and refuse a record whose figures differ.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flopwatch.model.counters import Counters, Pipe, Precision
from flopwatch.model.flops import PPM, estimate, job_flops, peak_rate_all_pipes, upper_bound
from flopwatch.model.rates import rates_for

# What each figure is; printed next to the figures wherever they are shown as JSON.
LEGEND = {
    "flops": "FLOPs, estimate (FLOP model v1): matrix work at the job's declared precision, "
    "else bf16",
    "flops_upper": "FLOPs, sound upper bound (FLOP model v1): every pipe at its fastest rate "
    "and the maximum SM clock",
}


class Method(enum.Enum):
    GPM = "gpm"
    NVML_UTILIZATION = "nvml-utilization"
    UNKNOWN_RATE = "unknown-rate"


def method_for(cc: tuple[int, int], has_gpm: bool) -> Method:
    if not has_gpm:
        return Method.NVML_UTILIZATION
    return Method.GPM if rates_for(cc) is not None else Method.UNKNOWN_RATE


def _utilization_estimate(c: Counters, centipercent: int, precision: Precision) -> int:
    # Without GPM the only reading is the fraction of time any kernel ran. The estimate assumes
    # the busy time ran dense matrix work at the declared precision: coarse, and known to
    # overstate jobs that are not matrix-bound (see docs/flop-model.md).
    busy = Counters(
        cc=c.cc,
        sm_count=c.sm_count,
        max_sm_clock_mhz=c.max_sm_clock_mhz,
        duration_ns=c.duration_ns,
        elapsed_sm_cycles=c.elapsed_sm_cycles,
        active={Pipe.HMMA: c.elapsed_sm_cycles * centipercent // 10_000},
    )
    return estimate(busy, precision)


def _utilization_upper(c: Counters, centipercent: int) -> int:
    # Busy time x every pipe at its fastest rate x maximum clock: wide, but sound.
    at_max = max(c.max_elapsed_sm_cycles, c.elapsed_sm_cycles)
    return -(-at_max * centipercent * peak_rate_all_pipes(c.cc) // 10_000)


@dataclass(frozen=True)
class JobFigures:
    flops_estimate: int
    flops_upper: int


def whole_gpu_upper(c: Counters, method: Method, utilization_centipercent: int = 0) -> int:
    if method is Method.NVML_UTILIZATION:
        return _utilization_upper(c, utilization_centipercent)
    return upper_bound(c)


def job_figures(
    c: Counters,
    method: Method,
    share_ppm: int,
    precision: Precision,
    utilization_centipercent: int = 0,
) -> JobFigures:
    """A job's figures for one interval.

    The estimate is the job's share of the whole-GPU estimate at the job's declared precision.
    The upper bound is the whole GPU's: a share comes from sampled per-process utilization and
    could understate a job, so each job's bound stays sound on its own (bounds of jobs sharing a
    GPU are therefore not additive).
    """
    if method is Method.NVML_UTILIZATION:
        whole = _utilization_estimate(c, utilization_centipercent, precision)
    else:
        whole = estimate(c, precision)
    upper = whole_gpu_upper(c, method, utilization_centipercent) if share_ppm > 0 else 0
    return JobFigures(flops_estimate=job_flops(whole, share_ppm), flops_upper=upper)


__all__ = [
    "LEGEND",
    "PPM",
    "JobFigures",
    "Method",
    "job_figures",
    "method_for",
    "whole_gpu_upper",
]
