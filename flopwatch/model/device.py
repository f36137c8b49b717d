"""The FLOP model for one device, its rate tables resolved once. Pure.

`flopwatch.model.flops` and `figures.interval_figures` state the model one figure at a time,
from a `Counters`; they are the reference. `DeviceModel.figures` computes the same figures for
one interval of a known device in one pass, without building intermediate objects, because the
collector computes them for every GPU interval it verifies (and each record names a few devices
many times). The agent signs with it and every verifier recomputes with it, so signer and
verifier still share one implementation, and a property test holds it equal to the reference
(tests/model/test_flop_model.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from flopwatch.model.counters import Counters, Pipe, Precision
from flopwatch.model.figures import IntervalFigures, JobFigures, Method, interval_figures
from flopwatch.model.flops import PPM, fastest_rates, peak_rate_all_pipes, rates_at

# Active SM-cycles of the pipes that ran (a pipe left out ran 0 cycles).
Active = Sequence[tuple[Pipe, int]]


class DeviceModel:
    """One device's constants: compute capability, SM count and maximum SM clock."""

    __slots__ = ("_fastest", "_peak", "_sm_mhz", "cc", "max_sm_clock_mhz", "sm_count")

    def __init__(self, cc: tuple[int, int], sm_count: int, max_sm_clock_mhz: int) -> None:
        self.cc = cc
        self.sm_count = sm_count
        self.max_sm_clock_mhz = max_sm_clock_mhz
        self._sm_mhz = sm_count * max_sm_clock_mhz
        self._fastest = fastest_rates(cc)
        self._peak = peak_rate_all_pipes(cc)

    def max_elapsed(self, duration_ns: int) -> int:
        """`Counters.max_elapsed_sm_cycles`: SM-cycles at the maximum clock for the duration."""
        return self._sm_mhz * duration_ns // 1000

    def physical_peak(self, duration_ns: int) -> int:
        """`flops.physical_peak`: every pipe of every SM at its fastest, at the maximum clock."""
        return self.max_elapsed(duration_ns) * self._peak

    def counters(self, duration_ns: int, elapsed: int, active: Active) -> Counters:
        return Counters(
            self.cc, self.sm_count, self.max_sm_clock_mhz, duration_ns, elapsed, dict(active)
        )

    def figures(
        self,
        duration_ns: int,
        elapsed: int,
        active: Active,
        *,
        method: Method,
        shares: Sequence[tuple[int, Precision]],
        utilization_centipercent: int = 0,
    ) -> IntervalFigures:
        """`figures.interval_figures` of this device's counters for one interval."""
        if method is Method.NVML_UTILIZATION:  # no counters to go over: the reference
            c = self.counters(duration_ns, elapsed, active)
            return interval_figures(c, method, shares, utilization_centipercent)
        upper = 0  # flops.upper_bound
        if elapsed > 0:
            fastest = self._fastest
            at_max = max(self.max_elapsed(duration_ns), elapsed)
            for p, cycles in active:
                upper += -(-(cycles * fastest[p] * at_max) // elapsed)
        whole: dict[Precision, int] = {}  # flops.estimate, per precision declared
        jobs = []
        total = 0
        for share_ppm, precision in shares:
            at_precision = whole.get(precision)
            if at_precision is None:
                table = rates_at(self.cc, precision)
                if table is None:  # an unknown GPU: its estimate is the bound
                    at_precision = upper
                else:
                    at_precision = 0
                    for p, cycles in active:
                        at_precision += cycles * table[p]
                whole[precision] = at_precision
            estimate = at_precision * share_ppm // PPM  # flops.job_flops
            total += estimate
            jobs.append(JobFigures(estimate, upper if share_ppm > 0 else 0))
        return IntervalFigures(tuple(jobs), total, upper)


@lru_cache(maxsize=4096)  # bounded: the constants come from records, which anyone may send
def device_model(cc: tuple[int, int], sm_count: int, max_sm_clock_mhz: int) -> DeviceModel:
    """The model of a device, made once per distinct kind of device a process meets."""
    return DeviceModel(cc, sm_count, max_sm_clock_mhz)
