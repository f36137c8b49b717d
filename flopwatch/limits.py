"""Size, count and rate limits, in one place.

Every bound the agent, the collector or the verifier enforces on input is named here, so a
reviewer can see them together and tests can refer to them by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # One DSSE envelope as received over gRPC or read from a report bundle.
    max_envelope_bytes: int = 1 << 20
    # gRPC message cap (a SubmitRequest carries one envelope plus framing).
    max_grpc_message_bytes: int = (1 << 20) + 4096
    max_signatures_per_envelope: int = 4
    max_gpus_per_attestation: int = 64
    max_intervals_per_attestation: int = 4096
    max_jobs_per_interval: int = 64
    max_gaps_per_attestation: int = 4096
    max_string_chars: int = 256
    # Longest interval one GpuInterval may cover, and how far in the future its end may lie.
    max_interval_ns: int = 3600 * 10**9
    max_clock_skew_ns: int = 300 * 10**9
    # Slack on the physical-peak check: the SM clock integral may exceed max clock x time by
    # this fraction (clock readings and interval edges are not perfectly aligned).
    clock_tolerance: float = 0.05
    # Envelopes committed in one database transaction by the collector.
    max_commit_batch: int = 256


DEFAULT_LIMITS = Limits()
