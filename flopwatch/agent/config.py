"""Agent configuration: one frozen object, filled from the command line, the environment and a
TOML file (flopwatch/cli/agent_cmd.py). Defaults here suit tests and embedding: no control socket
and no metrics endpoint unless asked; the command line turns both on by default."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    collector: str  # HOST:PORT of the collector's gRPC endpoint
    backend: str = "nvml"  # "nvml", "replay:PATH" or "sim:N"
    state_dir: Path = Path("/var/lib/flopwatch-agent")  # node key (0600) and spool
    node_id: str = field(default_factory=socket.gethostname)
    cluster: str = "default"
    interval_s: float = 1.0  # more than 0.1 s with the NVML backend (the CLI refuses less)
    # Sampling rounds signed together (fewer signatures; later visibility): one record, or
    # several consecutive ones where they would not fit in `max_record_bytes`.
    intervals_per_record: int = 1
    # A signed record's bytes, at most (flopwatch.agent.records.MAX_RECORD_BYTES: 60 KiB, under
    # the 65,535 bytes of a tlog-tiles log entry; no less than MIN_RECORD_BYTES).
    max_record_bytes: int = 60 * 1024
    jobs_file: Path | None = None  # JOBS.json windows (replay and manual use)
    # Attribution sources besides the job registry: "auto" (Slurm and, where its socket exists,
    # Kubernetes, with the NVML backend only), "none", or a comma list of slurm,kubernetes.
    attribution: str = "auto"
    proc_root: Path = Path("/proc")  # where the Slurm and Kubernetes sources read /proc/PID
    podresources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    podresources_refresh_s: float = 5.0  # how often the kubelet is asked which pod holds a GPU
    # Runs and accounts (docs/agent.md "Runs, accounts and workload class"). The Slurm source
    # takes a job's run from `slurm_run_from`: "environment" (the variable `slurm_run_variable`
    # in its processes), "comment" or "wckey" (the job's, from scontrol); its class from
    # `slurm_class_variable`, its parent run from `slurm_parent_variable`; its account from
    # `scontrol` (a path; "off": never asked).
    slurm_run_from: str = "environment"
    slurm_run_variable: str = "FLOPWATCH_RUN"
    slurm_class_variable: str = "FLOPWATCH_RUN_CLASS"
    slurm_parent_variable: str = "FLOPWATCH_RUN_PARENT"
    scontrol: str = "scontrol"
    scontrol_timeout_s: float = 2.0
    # Kubernetes pods' runs and accounts from the API server (flopwatch/agent/attribution/
    # kubemeta.py): "auto" (in-cluster where the agent runs in a pod), "off", or a URL with an
    # optional token and CA file; the node whose pods are watched ("": node_id); the pod label
    # and annotation naming the run, the labels or annotations naming its class and its parent
    # run, and the namespace label naming the account ("": the namespace is the account).
    k8s_api: str = "auto"
    k8s_node: str = ""
    k8s_token_file: Path | None = None
    k8s_ca_file: Path | None = None
    k8s_run_label: str = "flopwatch.dev/run"
    k8s_run_annotation: str = "flopwatch.dev/run"
    k8s_class_key: str = "flopwatch.dev/run-class"
    k8s_parent_key: str = "flopwatch.dev/run-parent"
    k8s_account_label: str = "flopwatch.dev/account"
    # Scheduler account (Slurm account, Kubernetes namespace or its label) -> accountable party.
    account_map: Mapping[str, str] = field(default_factory=dict)
    # The account of work no source finds one for, the node's unattributed work included.
    default_account: str = ""
    control_socket: Path | None = None  # `flopwatch job start|end` unix socket; None: off
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus endpoint; None: off
    replay_speed: float | None = 1.0  # replay pacing; None = as fast as possible
    insecure: bool = False  # plaintext gRPC; mTLS otherwise
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # One-time enrollment token file (`flopwatch nodes token`), presented on every connection.
    enroll_token_file: Path | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    # Stop once the backend is exhausted (replay end) and everything was acknowledged, or this
    # many seconds after the end if the collector never acknowledges.
    drain_timeout_s: float = 60.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    # No ack for this long with records in flight: the stream is taken as dead (half-open after
    # a partition) and the sender reconnects.
    ack_timeout_s: float = 60.0

    @property
    def key_path(self) -> Path:
        return self.state_dir / "node.key"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "jobs.json"
