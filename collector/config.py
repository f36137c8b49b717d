"""Collector configuration: one frozen object, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flopwatch.limits import DEFAULT_LIMITS, Limits

DEFAULT_THRESHOLDS = (10**25, 10**26)


@dataclass(frozen=True)
class CollectorConfig:
    listen: str = "127.0.0.1:7443"  # HOST:PORT for gRPC; port 0 picks a free one
    db: str = "sqlite:flopwatch.db"  # "sqlite:PATH" (PostgreSQL comes later)
    metrics_listen: str | None = "127.0.0.1:9464"  # HOST:PORT for /metrics; None disables
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # FLOPs
    alert_basis: str = "upper"  # "upper" (default, no crossing missed) or "estimate"
    insecure: bool = False  # plaintext gRPC; mTLS otherwise
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Trust on first use: enroll any new node key that connects. For demos and labs only; the
    # collector logs a warning. Otherwise keys must be enrolled by an operator first.
    enroll_on_first_use: bool = False
    limits: Limits = DEFAULT_LIMITS
