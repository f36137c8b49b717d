"""The versioned FLOP model: rate table and the arithmetic that turns counters into FLOPs.

Pure and I/O-free. Everything is integer arithmetic on the raw counters an attestation carries,
so the agent, the collector and an offline verifier compute bit-identical figures.
"""

from flopwatch.model.counters import Counters, Pipe, Precision
from flopwatch.model.flops import (
    MODEL_VERSION,
    estimate,
    job_flops,
    physical_peak,
    upper_bound,
)
from flopwatch.model.rates import ArchRates, rates_for

__all__ = [
    "MODEL_VERSION",
    "ArchRates",
    "Counters",
    "Pipe",
    "Precision",
    "estimate",
    "job_flops",
    "physical_peak",
    "rates_for",
    "upper_bound",
]
