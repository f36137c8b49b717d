"""FLOP per clock per SM, per pipe, per compute capability.

One table. Each row says where its numbers come from:
- "measured": fitted to real readings with exact ground truth (tests/fixtures/h100-trace-1).
- "published-peak": NVIDIA's published dense peak divided by SM count x the boost clock that
  peak assumes.

HMMA rates depend on the precision that ran, which the counter cannot see; `hmma` maps each
matrix precision to its rate and the fastest entry is the one the upper bound uses. IMMA counts
integer tensor operations (thresholds in policy count "integer or floating-point operations").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flopwatch.model.counters import Pipe


@dataclass(frozen=True)
class ArchRates:
    arch: str
    source: str
    hmma: Mapping[str, int]  # matrix precision ("tf32", "16bit", "fp8", "fp4") -> FLOP/clk/SM
    imma: int
    dfma_tensor: int
    fp64: int
    fp32: int
    fp16: int

    def rate(self, pipe: Pipe, hmma_kind: str) -> int:
        if pipe is Pipe.HMMA:
            return self.hmma[hmma_kind] if hmma_kind in self.hmma else self.hmma["16bit"]
        return int(getattr(self, pipe.value))

    def fastest(self, pipe: Pipe) -> int:
        if pipe is Pipe.HMMA:
            return max(self.hmma.values())
        return int(getattr(self, pipe.value))


def _hmma(tf32: int, b16: int, fp8: int = 0, fp4: int = 0) -> Mapping[str, int]:
    rates = {"tf32": tf32, "16bit": b16, "fp8": fp8, "fp4": fp4}
    return MappingProxyType({k: v for k, v in rates.items() if v})


AMPERE_A100 = ArchRates(
    # A100: 108 SMs at 1410 MHz; 312 TF fp16 / 156 TF tf32 / 19.5 TF fp64 tensor / 19.5 TF fp32 /
    # 9.7 TF fp64 / 78 TF fp16 / 624 TOPS int8.
    arch="ampere-ga100",
    source="published-peak",
    hmma=_hmma(tf32=1024, b16=2048),
    imma=4096,
    dfma_tensor=128,
    fp64=64,
    fp32=128,
    fp16=512,
)
AMPERE_GA10X = ArchRates(
    # A10/A40 (GA102): A10 72 SMs at 1695 MHz; 125 TF bf16 / 62.5 TF tf32 / 31.2 TF fp32 /
    # 250 TOPS int8; fp64 at 1/64 of fp32.
    arch="ampere-ga10x",
    source="published-peak",
    hmma=_hmma(tf32=512, b16=1024),
    imma=2048,
    dfma_tensor=0,
    fp64=4,
    fp32=256,
    fp16=256,
)
ADA = ArchRates(
    # L40S (AD102): 142 SMs at 2520 MHz; 362 TF bf16 / 183 TF tf32 / 733 TF fp8 / 91.6 TF fp32.
    arch="ada",
    source="published-peak",
    hmma=_hmma(tf32=512, b16=1024, fp8=2048),
    imma=2048,
    dfma_tensor=0,
    fp64=4,
    fp32=256,
    fp16=256,
)
HOPPER = ArchRates(
    # Fitted on an H100 SXM (132 SMs) against exact counts: tensor 2048/4096/8192, fp64 tensor
    # 256, fp32 256, fp64 128. fp16 (non-tensor, 2x fp32) and int8 (= fp8 rate) from the Hopper
    # whitepaper peaks.
    arch="hopper",
    source="measured",
    hmma=_hmma(tf32=2048, b16=4096, fp8=8192),
    imma=8192,
    dfma_tensor=256,
    fp64=128,
    fp32=256,
    fp16=512,
)
BLACKWELL = ArchRates(
    # B200: 148 SMs; dense 1.1 PF tf32 / 2.25 PF bf16 / 4.5 PF fp8 / 9 PF fp4 / 40 TF fp64 /
    # 80 TF fp32 at about 1.86 GHz.
    arch="blackwell",
    source="published-peak",
    hmma=_hmma(tf32=4096, b16=8192, fp8=16384, fp4=32768),
    imma=16384,
    dfma_tensor=128,
    fp64=128,
    fp32=256,
    fp16=512,
)

RATE_TABLE: Mapping[tuple[int, int], ArchRates] = MappingProxyType(
    {
        (8, 0): AMPERE_A100,
        (8, 6): AMPERE_GA10X,
        (8, 7): AMPERE_GA10X,
        (8, 9): ADA,
        (9, 0): HOPPER,
        (10, 0): BLACKWELL,
    }
)


def rates_for(cc: tuple[int, int]) -> ArchRates | None:
    """The row for a compute capability, or None when the model does not know the GPU."""
    return RATE_TABLE.get(cc)


def fastest_known(pipe: Pipe) -> int:
    """The fastest rate any known GPU reaches on `pipe` (bound for unknown GPUs)."""
    return max(r.fastest(pipe) for r in RATE_TABLE.values())
