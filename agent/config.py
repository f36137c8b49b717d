"""Agent configuration: one frozen object, filled from the command line (and later a file)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    collector: str  # HOST:PORT of the collector's gRPC endpoint
    backend: str = "nvml"  # "nvml", "replay:PATH" or "sim:N"
    state_dir: Path = Path("/var/lib/flopwatch-agent")  # node key (0600) and spool
    node_id: str = field(default_factory=socket.gethostname)
    cluster: str = "default"
    interval_s: float = 1.0
    jobs_file: Path | None = None  # JOBS.json windows (replay and manual use)
    replay_speed: float | None = 1.0  # replay pacing; None = as fast as possible
    insecure: bool = False  # plaintext gRPC; mTLS otherwise
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    # Stop once the backend is exhausted (replay end) and everything was acknowledged, or this
    # many seconds after the end if the collector never acknowledges.
    drain_timeout_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0

    @property
    def key_path(self) -> Path:
        return self.state_dir / "node.key"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"
