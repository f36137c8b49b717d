"""Settings of the log in the C2SP formats: checkpoints, tiles (HTTP and directory), witnesses.

All off unless set: `CollectorConfig.tlog` is None by default, and then the collector serves
its log only over gRPC (LogService) as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flopwatch.collector.log.witnessing import DEFAULT_WITNESS_TIMEOUT_S
from flopwatch.httpserve import HttpLimits


@dataclass(frozen=True)
class TlogConfig:
    # The checkpoint origin and log key name; None: "flopwatch.invalid/log-<key id>" (name it
    # after where the tiles are served, e.g. "collector.example.org/flopwatch").
    origin: str | None = None
    # HOST:PORT of the tlog-tiles HTTP(S) server; None: no server. HTTPS with the collector's
    # certificate unless the collector runs --insecure.
    tiles_listen: str | None = None
    # Also write tiles and checkpoints here, for any web server to serve; None: not written.
    tiles_dir: Path | None = None
    # A file (mode 0600) holding the bearer token readers present; None: mTLS clients only.
    token_file: Path | None = None
    # A C2SP tlog-policy file of witnesses and quorum; None: checkpoints are published signed by
    # the log alone.
    witness_policy: Path | None = None
    checkpoint_interval_s: float = 10.0  # how often a new checkpoint is made, if the log grew
    witness_timeout_s: float = DEFAULT_WITNESS_TIMEOUT_S
    http: HttpLimits = field(default_factory=HttpLimits)
