"""Raw readings of one GPU over one interval, as the FLOP model consumes them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple


class Pipe(enum.Enum):
    # Members are singletons compared by identity, so identity hashing is exact. It is in C,
    # where Enum's own hash is Python: pipes key the rate tables the collector consults for
    # every GPU interval.
    __hash__ = object.__hash__

    HMMA = "hmma"  # half / tf32 / fp8 matrix tensor pipe
    IMMA = "imma"  # integer matrix tensor pipe
    DFMA_TENSOR = "dfma_tensor"  # fp64 matrix tensor pipe
    FP64 = "fp64"
    FP32 = "fp32"
    FP16 = "fp16"


class Precision(enum.Enum):
    """What a job declared for its matrix work; UNSPECIFIED when it declared nothing."""

    __hash__ = object.__hash__  # as for Pipe

    UNSPECIFIED = "unspecified"
    BF16 = "bf16"
    FP16 = "fp16"
    TF32 = "tf32"
    FP8 = "fp8"
    FP32 = "fp32"
    FP64 = "fp64"

    @classmethod
    def parse(cls, text: str | None) -> Precision:
        if text is None or text == "":
            return cls.UNSPECIFIED
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(p.value for p in cls if p is not cls.UNSPECIFIED)
            raise ValueError(f"unknown precision {text!r}; expected one of {names}") from None


class Counters(NamedTuple):
    """Integer counters of one GPU interval.

    `active` maps each pipe to its active SM-cycles (summed over SMs); `elapsed_sm_cycles` is
    SM count x integral of the SM clock over the interval. Their ratio is the pipe's busy fraction.
    Immutable; a tuple because the collector builds one for every GPU interval it verifies.
    """

    cc: tuple[int, int]
    sm_count: int
    max_sm_clock_mhz: int
    duration_ns: int
    elapsed_sm_cycles: int
    active: Mapping[Pipe, int] = MappingProxyType({})

    def active_cycles(self, pipe: Pipe) -> int:
        return self.active.get(pipe, 0)

    @property
    def max_elapsed_sm_cycles(self) -> int:
        """SM-cycles the GPU would have run at its maximum SM clock over the interval."""
        return self.sm_count * self.max_sm_clock_mhz * self.duration_ns // 1000
