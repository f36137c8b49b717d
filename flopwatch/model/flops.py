"""FLOP model v1: counters -> FLOPs, estimate and sound upper bound.

    FLOPs = sum over pipes of active SM-cycles(pipe) x rate(pipe, precision)

where active SM-cycles = busy fraction x SM count x integral of the SM clock. The upper bound
takes, for every pipe, the fastest rate the pipe supports and the maximum SM clock over the
whole interval:

    upper = sum over pipes of ceil(busy fraction x SM count x max clock x duration x fastest rate)

All arithmetic is on integers, so every party recomputes the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from flopwatch.model.counters import Counters, Pipe, Precision
from flopwatch.model.rates import ArchRates, fastest_known, rates_for

MODEL_VERSION = "1"
PPM = 1_000_000

# The estimate's HMMA rate for each declared precision. fp32 matrix work on tensor cores runs as
# tf32; fp64 work does not use the HMMA pipe, so whatever HMMA work such a job has is taken at the
# default (16-bit) rate like an undeclared job's.
_HMMA_KIND = {
    Precision.UNSPECIFIED: "16bit",
    Precision.BF16: "16bit",
    Precision.FP16: "16bit",
    Precision.TF32: "tf32",
    Precision.FP32: "tf32",
    Precision.FP8: "fp8",
    Precision.FP64: "16bit",
}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def estimate(counters: Counters, precision: Precision = Precision.UNSPECIFIED) -> int:
    """Whole-GPU FLOP estimate for the interval, taking HMMA work at `precision`.

    For a GPU the rate table does not know there is no estimate to make: the figure returned is
    the upper bound, and the record's method says `unknown-rate`.
    """
    table = rates_at(counters.cc, precision)
    if table is None:
        return upper_bound(counters)
    # A pipe with no active cycles adds nothing, so only the pipes present are summed.
    total = 0
    for p, cycles in counters.active.items():
        total += cycles * table[p]
    return total


def _fastest(rates: ArchRates | None, pipe: Pipe) -> int:
    return rates.fastest(pipe) if rates is not None else fastest_known(pipe)


# The two lookups below run for every GPU interval the collector verifies; the rate table is
# immutable, so each (compute capability, kind) is resolved once.
@lru_cache(maxsize=1024)  # bounded: compute capabilities come from records anyone may send
def _rate_table(cc: tuple[int, int], hmma_kind: str) -> Mapping[Pipe, int] | None:
    rates = rates_for(cc)
    return None if rates is None else {p: rates.rate(p, hmma_kind) for p in Pipe}


def rates_at(cc: tuple[int, int], precision: Precision) -> Mapping[Pipe, int] | None:
    """Each pipe's rate for work declared at `precision` (what `estimate` uses); None for a GPU
    the rate table does not know."""
    return _rate_table(cc, _HMMA_KIND[precision])


@lru_cache(maxsize=1024)  # bounded: compute capabilities come from records anyone may send
def fastest_rates(cc: tuple[int, int]) -> Mapping[Pipe, int]:
    """Each pipe's fastest rate (what `upper_bound` uses)."""
    rates = rates_for(cc)
    return {p: _fastest(rates, p) for p in Pipe}


def upper_bound(counters: Counters) -> int:
    """Sound upper bound: fastest rate of each pipe, maximum SM clock, whole interval."""
    fastest = fastest_rates(counters.cc)
    elapsed = counters.elapsed_sm_cycles
    if elapsed <= 0:
        return 0
    # Scale busy cycles up to what they would be at the maximum clock, never down.
    at_max = max(counters.max_elapsed_sm_cycles, elapsed)
    total = 0
    for p, cycles in counters.active.items():
        total += _ceil_div(cycles * fastest[p] * at_max, elapsed)
    return total


@lru_cache(maxsize=1024)  # bounded: compute capabilities come from records anyone may send
def peak_rate_all_pipes(cc: tuple[int, int]) -> int:
    """FLOP per clock per SM with every pipe busy at its fastest rate."""
    return sum(fastest_rates(cc).values())


def physical_peak(counters: Counters) -> int:
    """Most FLOPs the GPU could physically do in the interval: every pipe busy on every SM at
    its fastest rate and the maximum SM clock. No record may claim more."""
    return counters.max_elapsed_sm_cycles * peak_rate_all_pipes(counters.cc)


def job_flops(whole_gpu: int, share_ppm: int) -> int:
    """A job's part of a whole-GPU figure (floor; shares are parts per million)."""
    return whole_gpu * share_ppm // PPM
