"""Per-interval and per-job figures under each measurement method. Pure.

The agent computes these when it signs; the collector and the offline verifier recompute them
from the raw counters in the record and refuse a record whose figures differ.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

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


@lru_cache(maxsize=1024)  # bounded, as the rate lookups
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


class JobFigures(NamedTuple):
    flops_estimate: int
    flops_upper: int


class IntervalFigures(NamedTuple):
    """One GPU interval's figures: each job's, in the order the shares were given, and the
    interval's own (the jobs' estimates summed, and the whole GPU's upper bound)."""

    jobs: tuple[JobFigures, ...]
    flops_estimate: int
    flops_upper: int


def whole_gpu_upper(c: Counters, method: Method, utilization_centipercent: int = 0) -> int:
    if method is Method.NVML_UTILIZATION:
        return _utilization_upper(c, utilization_centipercent)
    return upper_bound(c)


def _whole_gpu_estimate(
    c: Counters, method: Method, precision: Precision, utilization_centipercent: int
) -> int:
    if method is Method.NVML_UTILIZATION:
        return _utilization_estimate(c, utilization_centipercent, precision)
    return estimate(c, precision)


def interval_figures(
    c: Counters,
    method: Method,
    shares: Sequence[tuple[int, Precision]],
    utilization_centipercent: int = 0,
) -> IntervalFigures:
    """The figures of one GPU interval shared by jobs, given as (share in ppm, declared
    precision). The agent signs these and every verifier recomputes them with this function.

    A job's estimate is its share of the whole-GPU estimate at the job's declared precision.
    A job's upper bound is the whole GPU's: a share comes from sampled per-process utilization
    and could understate a job, so each job's bound stays sound on its own (bounds of jobs
    sharing a GPU are therefore not additive). A job with no share claims nothing.
    """
    upper = whole_gpu_upper(c, method, utilization_centipercent)
    whole: dict[Precision, int] = {}
    jobs = []
    for share_ppm, precision in shares:
        at_precision = whole.get(precision)
        if at_precision is None:
            at_precision = _whole_gpu_estimate(c, method, precision, utilization_centipercent)
            whole[precision] = at_precision
        jobs.append(JobFigures(job_flops(at_precision, share_ppm), upper if share_ppm > 0 else 0))
    return IntervalFigures(tuple(jobs), sum(j.flops_estimate for j in jobs), upper)


def job_figures(
    c: Counters,
    method: Method,
    share_ppm: int,
    precision: Precision,
    utilization_centipercent: int = 0,
) -> JobFigures:
    """One job's figures for one interval (`interval_figures` for a single share)."""
    return interval_figures(c, method, ((share_ppm, precision),), utilization_centipercent).jobs[0]


__all__ = [
    "LEGEND",
    "PPM",
    "IntervalFigures",
    "JobFigures",
    "Method",
    "interval_figures",
    "job_figures",
    "method_for",
    "whole_gpu_upper",
]
