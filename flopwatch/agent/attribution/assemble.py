"""Which attribution sources an agent runs, from its configuration.

The job registry (`flopwatch job start|end`) always runs, and JOBS.json windows where `--jobs`
names a file. `--attribution` picks the rest:

  auto        with the NVML backend: Slurm, and Kubernetes where the kubelet's PodResources
              socket exists; with replay or simulated GPUs: neither (their pids are not this
              machine's processes)
  none        neither
  slurm,kubernetes (either or both)   exactly those; a Kubernetes socket that is missing is
              then a logged, counted failure on every attempt
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flopwatch.agent.attribution.base import AttributionSource, Attributor
from flopwatch.agent.attribution.jobs_file import JobsFileSource
from flopwatch.agent.attribution.kubernetes import KubernetesSource
from flopwatch.agent.attribution.labels import AccountMap, Refusals
from flopwatch.agent.attribution.podresources import PodResourcesClient
from flopwatch.agent.attribution.procfs import ProcFs
from flopwatch.agent.attribution.registry import JobRegistry
from flopwatch.agent.attribution.slurm import SlurmSettings, SlurmSource
from flopwatch.agent.backends.base import GpuInfo
from flopwatch.agent.config import AgentConfig
from flopwatch.errors import ConfigError

log = logging.getLogger(__name__)

CHOICES = ("slurm", "kubernetes")


def chosen_sources(config: AgentConfig) -> tuple[str, ...]:
    text = config.attribution.strip()
    if text == "none":
        return ()
    if text == "auto":
        if config.backend != "nvml":
            return ()
        found: tuple[str, ...] = ("slurm",)
        if config.podresources_socket.is_socket():
            found += ("kubernetes",)
        return found
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CHOICES]
    if unknown or not names:
        raise ConfigError(
            f"--attribution {config.attribution!r}: use auto, none, or a comma list of "
            + ", ".join(CHOICES)
        )
    return names


def build_attributor(
    config: AgentConfig, gpus: Sequence[GpuInfo], registry: JobRegistry
) -> Attributor:
    names = chosen_sources(config)
    proc = ProcFs(config.proc_root)
    accounts = AccountMap(config.account_map, config.default_account)
    refusals = Refusals()
    sources: list[AttributionSource] = [registry]
    if config.jobs_file is not None:
        sources.append(JobsFileSource(config.jobs_file))
    if "slurm" in names:
        settings = SlurmSettings(
            run_from=config.slurm_run_from,
            run_variable=config.slurm_run_variable,
            class_variable=config.slurm_class_variable,
            scontrol=config.scontrol,
            scontrol_timeout_s=config.scontrol_timeout_s,
        )
        sources.append(
            SlurmSource(config.cluster, proc, settings, accounts=accounts, refusals=refusals)
        )
    if "kubernetes" in names:
        client = PodResourcesClient(config.podresources_socket)
        sources.append(
            KubernetesSource(
                config.cluster, client, proc, gpus, refresh_s=config.podresources_refresh_s
            )
        )
    log.info("attribution sources: %s", ", ".join(s.name for s in sources))
    return Attributor(
        sources,
        declared=registry.declared,
        refusals=refusals,
        default_account=accounts.default,
    )
