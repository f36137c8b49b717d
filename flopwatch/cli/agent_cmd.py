"""`flopwatch agent`: sample this node's GPUs, sign, spool and stream to a collector."""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from flopwatch.cli.common import add_tls_arguments, check_identifier, host_port
from flopwatch.cli.config_file import add_config_file, toml_accepts
from flopwatch.errors import ConfigError

HELP = "run the node agent: sample GPU counters, attribute to jobs, sign and send to a collector"
ENV_PREFIX = "FLOPWATCH_AGENT_"
DEFAULT_CONTROL_SOCKET = "/run/flopwatch/agent.sock"
# One minute of 1 s rounds, held unsigned at most. Records are kept under 60 KiB whatever the
# setting (a batch larger is signed as several records), so more rounds would save no further
# signatures on a node of 8 GPUs, only delay them.
MAX_INTERVALS_PER_RECORD = 60
# Loopback by default: node-local scrapers and operators can read it, nothing off the node can.
DEFAULT_METRICS = "127.0.0.1:9465"


def _speed(text: str) -> float | None:
    if text in ("max", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def _rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_INTERVALS_PER_RECORD:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_INTERVALS_PER_RECORD}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _add_sampling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GPUs and sampling")
    g.add_argument(
        "--backend",
        default="nvml",
        metavar="nvml|replay:PATH|sim:N[:PROFILE]",
        help="where readings come from: the real GPUs through NVML (default), a recorded trace, "
        "or N simulated GPUs (PROFILE h100 (default), a100 (no GPM: nvml-utilization), "
        "h100-mig (one device per MIG instance), unknown (unknown-rate))",
    )
    g.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        help="seconds per sample (default: 1); more than 0.1 with the NVML backend, which needs "
        "GPM samples more than 100 ms apart",
    )
    g.add_argument(
        "--intervals-per-record",
        type=_rounds,
        default=1,
        metavar="N",
        help="sampling rounds signed together (default: 1). More rounds per record cost "
        "fewer signatures, sends and commits (agent and collector CPU) and make each record "
        "visible at the collector N intervals later; every interval keeps its own counters and "
        "its own attribution. Rounds that would make a record over 60 KiB (about 250 "
        "GPU-intervals) are signed as several consecutive records",
    )
    g.add_argument(
        "--replay-speed",
        type=_speed,
        default=1.0,
        help="replay pacing: 1 = real time, 10 = ten times faster, max = no waiting",
    )


def _account_map(text: str) -> dict[str, str]:
    from flopwatch.agent.attribution.labels import parse_account_map

    return parse_account_map(text)


def _add_runs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "runs and accounts (see docs/agent.md, 'Runs, accounts and workload class')"
    )
    g.add_argument(
        "--slurm-run-from",
        choices=["environment", "comment", "wckey"],
        default="environment",
        help="where a Slurm job declares its run: a variable in its processes' environment "
        "(--slurm-run-variable), or the job's comment or WCKey as slurmctld knows them; "
        "undeclared, an array task's run is its array job, else the job is a run of its own "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--slurm-run-variable",
        default="FLOPWATCH_RUN",
        metavar="NAME",
        help="environment variable naming a Slurm job's run (default: %(default)s)",
    )
    g.add_argument(
        "--slurm-class-variable",
        default="FLOPWATCH_RUN_CLASS",
        metavar="NAME",
        help="environment variable naming the run's class: pretraining, fine-tuning, "
        "reinforcement-learning, synthetic-data, evaluation, inference (default: %(default)s)",
    )
    g.add_argument(
        "--slurm-parent-variable",
        default="FLOPWATCH_RUN_PARENT",
        metavar="NAME",
        help="environment variable naming the run the job's run derives from, a run of the same "
        "account (default: %(default)s)",
    )
    g.add_argument(
        "--scontrol",
        default="scontrol",
        metavar="PATH|off",
        help="scontrol, asked once per Slurm job (cached) for its account, comment, WCKey and "
        "array job; 'off': never (accounts then come from --default-account only) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--scontrol-timeout",
        type=_positive,
        default=2.0,
        help="seconds one scontrol call may take (default: %(default)s)",
    )
    account_map = g.add_argument(
        "--account-map",
        type=_account_map,
        metavar="NAME=ACCOUNT,...",
        help="who is accountable for a scheduler's account: a Slurm account, a Kubernetes "
        "namespace or its account label -> the customer or developer to count it under (in the "
        "config file, a table: [account_map] physics = "
        '"acme"); unmapped accounts count as themselves',
    )
    toml_accepts(account_map, dict)
    g.add_argument(
        "--default-account",
        default="",
        metavar="ACCOUNT",
        help="the account of work on this node that no scheduler or registration gives one "
        "(its unattributed work included), e.g. the customer a node is leased to (default: "
        "none)",
    )


def _add_kubernetes(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "Kubernetes API: pods' runs and accounts (see docs/agent.md, 'Runs, accounts and "
        "workload class')"
    )
    g.add_argument(
        "--k8s-api",
        default="auto",
        metavar="auto|off|URL",
        help="the API server the Kubernetes source lists and watches this node's pods on: auto "
        "(the cluster the agent runs in, with its service account; none outside a pod), off "
        "(pods are runs of their own in their namespace's account), or an http(s) URL "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--k8s-node",
        default="",
        metavar="NODE",
        help="this node's name in Kubernetes (spec.nodeName of its pods; default: --node-id)",
    )
    g.add_argument(
        "--k8s-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token for a --k8s-api URL (read again every minute)",
    )
    g.add_argument(
        "--k8s-ca-file",
        type=Path,
        metavar="FILE",
        help="CA certificate of an https --k8s-api URL (default: the system's)",
    )
    g.add_argument(
        "--k8s-run-label",
        default="flopwatch.dev/run",
        metavar="KEY",
        help="pod label naming the pod's run; '' to ignore (default: %(default)s)",
    )
    g.add_argument(
        "--k8s-run-annotation",
        default="flopwatch.dev/run",
        metavar="KEY",
        help="pod annotation naming the run where the label does not; '' to ignore "
        "(default: %(default)s); neither: the pod's top controller (JobSet, PyTorchJob, "
        "TrainJob, LeaderWorkerSet, RayJob, Job ...) is its run",
    )
    g.add_argument(
        "--k8s-class-key",
        default="flopwatch.dev/run-class",
        metavar="KEY",
        help="pod label or annotation naming the run's class (default: %(default)s)",
    )
    g.add_argument(
        "--k8s-parent-key",
        default="flopwatch.dev/run-parent",
        metavar="KEY",
        help="pod label or annotation naming the run the pod's run derives from, a run of the "
        "same account (default: %(default)s)",
    )
    g.add_argument(
        "--k8s-account-label",
        default="flopwatch.dev/account",
        metavar="KEY",
        help="namespace label, set by the cluster admin, naming the account of the "
        "namespace's pods (through --account-map); unlabelled namespaces, or '', count as "
        "themselves (default: %(default)s)",
    )


def _add_attribution(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("jobs (attribution; see docs/agent.md)")
    g.add_argument(
        "--cluster",
        default="default",
        help="cluster name that namespaces job ids, e.g. slurm:CLUSTER/123 (default: %(default)s)",
    )
    attribution = g.add_argument(
        "--attribution",
        default="auto",
        metavar="auto|none|slurm,kubernetes",
        help="job sources besides jobs registered with `flopwatch job start`: auto (Slurm, and "
        "Kubernetes where the PodResources socket exists; NVML backend only), none, or a list "
        "(default: %(default)s)",
    )
    toml_accepts(attribution, list)  # attribution = ["slurm", "kubernetes"]
    g.add_argument(
        "--jobs",
        type=Path,
        metavar="JOBS.json",
        help="fixed job windows per pid (replay and demos); ids are kept as written",
    )
    g.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="where to read processes' cgroups and environments (default: %(default)s)",
    )
    g.add_argument(
        "--podresources-socket",
        type=Path,
        default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        help="the kubelet's PodResources API socket (default: %(default)s)",
    )
    g.add_argument(
        "--control-socket",
        default=DEFAULT_CONTROL_SOCKET,
        metavar="PATH|off",
        help="unix socket (mode 0660) where `flopwatch job start|end` register jobs; 'off' "
        "disables (default: %(default)s)",
    )


def _add_delivery(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("spool and delivery")
    g.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/flopwatch-agent"),
        help="node key (created on first start, mode 0600), spool and registered jobs; created "
        "if missing (0700) and locked by this agent while it runs: a second agent on it exits "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--spool-max-bytes",
        type=int,
        default=256 * 1024 * 1024,
        help="spool size limit; past it the oldest records are dropped and a signed gap says "
        "so (default: %(default)s)",
    )
    g.add_argument(
        "--spool-segment-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="spool segment file size; at most half of --spool-max-bytes (default: %(default)s)",
    )
    g.add_argument(
        "--ack-timeout",
        type=_positive,
        default=60.0,
        help="seconds without an acknowledgement, records in flight, before reconnecting "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--drain-timeout",
        type=_positive,
        default=60.0,
        help="after a replay ends, seconds to wait for acknowledgements before giving up",
    )
    g.add_argument(
        "--metrics-listen",
        default=DEFAULT_METRICS,
        metavar="HOST:PORT|off",
        help="Prometheus /metrics of this agent (FLOP rate per GPU, spool depth, errors); "
        "loopback by default, 0.0.0.0:9465 to let a remote Prometheus scrape; 'off' disables "
        "(default: %(default)s)",
    )


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help=HELP,
        description=HELP
        + ". Every signed record is written to a local spool (fsync) before it is sent and "
        "resent until the collector acknowledges a durable commit.",
    )
    p.add_argument(
        "--collector", required=True, metavar="HOST:PORT", help="collector gRPC address (required)"
    )
    p.add_argument(
        "--node-id", default=socket.gethostname(), help="default: the host name (%(default)s)"
    )
    _add_sampling(p)
    _add_attribution(p)
    _add_runs(p)
    _add_kubernetes(p)
    _add_delivery(p)
    add_tls_arguments(p, "agent")
    p.add_argument(
        "--enroll-token-file",
        type=Path,
        metavar="FILE",
        help="one-time enrollment token from `flopwatch nodes token` (file mode 0600; a file, "
        "not an argument, so it never shows in the process list): the collector enrolls this "
        "node's key with it on first contact",
    )
    add_config_file(p, env_prefix=ENV_PREFIX, run=run)


def _off(text: str) -> str | None:
    return None if text == "off" else text


def _check_interval(backend: str, interval_s: float) -> None:
    """NVML wants GPM samples more than MIN_INTERVAL_S apart: refuse a shorter --interval."""
    from flopwatch.agent.backends.nvml.gpm import MIN_INTERVAL_S

    if backend == "nvml" and not interval_s > MIN_INTERVAL_S:
        raise ConfigError(
            f"--interval must be more than {MIN_INTERVAL_S:g} s with the NVML backend (NVML "
            f"needs GPM samples more than {MIN_INTERVAL_S * 1000:.0f} ms apart), got {interval_s:g}"
        )


def _check_runs(args: argparse.Namespace) -> None:
    """The run and account options, checked before anything starts."""
    from flopwatch.agent.attribution.kubeapi import ApiSettings
    from flopwatch.agent.attribution.kubemeta import KubeSettings
    from flopwatch.agent.attribution.labels import AccountMap
    from flopwatch.agent.attribution.slurm import SlurmSettings

    AccountMap(args.account_map or {}, args.default_account)
    if args.k8s_api not in ("auto", "off"):
        ApiSettings(args.k8s_api)
    KubeSettings(
        node=args.k8s_node or args.node_id,
        run_label=args.k8s_run_label,
        run_annotation=args.k8s_run_annotation,
        class_key=args.k8s_class_key,
        parent_key=args.k8s_parent_key,
        account_label=args.k8s_account_label,
    )
    SlurmSettings(
        run_from=args.slurm_run_from,
        run_variable=args.slurm_run_variable,
        class_variable=args.slurm_class_variable,
        parent_variable=args.slurm_parent_variable,
        scontrol=args.scontrol,
        scontrol_timeout_s=args.scontrol_timeout,
    )


def run(args: argparse.Namespace) -> int:
    from flopwatch.agent.config import AgentConfig
    from flopwatch.agent.service import run_agent

    host_port(args.collector)
    _check_interval(args.backend, args.interval)
    check_identifier("--node-id", args.node_id)
    check_identifier("--cluster", args.cluster)
    metrics = _off(args.metrics_listen)
    if metrics is not None:
        host_port(metrics)
    control = _off(args.control_socket)
    _check_runs(args)
    config = AgentConfig(
        collector=args.collector,
        backend=args.backend,
        state_dir=args.state_dir,
        node_id=args.node_id,
        cluster=args.cluster,
        interval_s=args.interval,
        intervals_per_record=args.intervals_per_record,
        jobs_file=args.jobs,
        attribution=args.attribution,
        proc_root=args.proc_root,
        podresources_socket=args.podresources_socket,
        slurm_run_from=args.slurm_run_from,
        slurm_run_variable=args.slurm_run_variable,
        slurm_class_variable=args.slurm_class_variable,
        slurm_parent_variable=args.slurm_parent_variable,
        scontrol=args.scontrol,
        scontrol_timeout_s=args.scontrol_timeout,
        account_map=args.account_map or {},
        default_account=args.default_account,
        k8s_api=args.k8s_api,
        k8s_node=args.k8s_node,
        k8s_token_file=args.k8s_token_file,
        k8s_ca_file=args.k8s_ca_file,
        k8s_run_label=args.k8s_run_label,
        k8s_run_annotation=args.k8s_run_annotation,
        k8s_class_key=args.k8s_class_key,
        k8s_parent_key=args.k8s_parent_key,
        k8s_account_label=args.k8s_account_label,
        control_socket=Path(control) if control is not None else None,
        metrics_listen=metrics,
        replay_speed=args.replay_speed,
        insecure=args.insecure,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        enroll_token_file=args.enroll_token_file,
        spool_max_bytes=args.spool_max_bytes,
        spool_segment_bytes=args.spool_segment_bytes,
        ack_timeout_s=args.ack_timeout,
        drain_timeout_s=args.drain_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_agent(config, stop=stop)
