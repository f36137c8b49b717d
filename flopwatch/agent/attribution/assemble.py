"""Which attribution sources an agent runs, from its configuration.

The job registry (`flopwatch job start|end`) always runs, and JOBS.json windows where `--jobs`
names a file. `--attribution` picks the rest:

  auto        with the NVML backend: Slurm, and Kubernetes where the kubelet's PodResources
              socket exists; with replay or simulated GPUs: neither (their pids are not this
              machine's processes)
  none        neither
  slurm,kubernetes (either or both)   exactly those; a Kubernetes socket that is missing is
              then a logged, counted failure on every attempt

The Kubernetes source reads pods' runs and their namespaces' accounts from the API server
(`--k8s-api`: in the pod's cluster by default, kubemeta.py) and keeps its metadata current on
background threads, started here and ended when the attributor closes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flopwatch.agent.attribution.base import AttributionSource, Attributor
from flopwatch.agent.attribution.jobs_file import JobsFileSource
from flopwatch.agent.attribution.kubeapi import ApiSettings, in_cluster
from flopwatch.agent.attribution.kubemeta import KubeDirectory, KubeSettings
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


def kube_settings(config: AgentConfig) -> KubeSettings:
    return KubeSettings(
        node=config.k8s_node or config.node_id,
        run_label=config.k8s_run_label,
        run_annotation=config.k8s_run_annotation,
        class_key=config.k8s_class_key,
        parent_key=config.k8s_parent_key,
        account_label=config.k8s_account_label,
    )


def kube_api(config: AgentConfig) -> ApiSettings | None:
    """Where the Kubernetes API server is (`--k8s-api`), or None: not asked."""
    if config.k8s_api == "off":
        return None
    if config.k8s_api == "auto":
        found = in_cluster()
        if found is None:
            log.info(
                "not in a pod (no KUBERNETES_SERVICE_HOST or service account token): pods are "
                "runs of their own in their namespace's account (--k8s-api to name a server)"
            )
        return found
    return ApiSettings(config.k8s_api, token_file=config.k8s_token_file, ca_file=config.k8s_ca_file)


def kube_directory(config: AgentConfig, refusals: Refusals) -> KubeDirectory | None:
    api = kube_api(config)
    if api is None:
        return None
    settings = kube_settings(config)
    log.info("Kubernetes API %s: watching the pods of node %s", api.url, settings.node)
    return KubeDirectory(api, config.cluster, settings, refusals=refusals)


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
            parent_variable=config.slurm_parent_variable,
            scontrol=config.scontrol,
            scontrol_timeout_s=config.scontrol_timeout_s,
        )
        sources.append(
            SlurmSource(config.cluster, proc, settings, accounts=accounts, refusals=refusals)
        )
    if "kubernetes" in names:
        client = PodResourcesClient(config.podresources_socket)
        directory = kube_directory(config, refusals)
        sources.append(
            KubernetesSource(
                config.cluster,
                client,
                proc,
                gpus,
                refresh_s=config.podresources_refresh_s,
                directory=directory,
                accounts=accounts,
            )
        )
        if directory is not None:
            directory.start()
            if not directory.wait_listed():
                log.warning(
                    "Kubernetes API %s has not answered yet: pods are attributed as unknown "
                    "(their own run, their namespace's account) until it does",
                    directory.pods.api.settings.url,
                )
    log.info("attribution sources: %s", ", ".join(s.name for s in sources))
    return Attributor(
        sources,
        declared=registry.declared,
        refusals=refusals,
        default_account=accounts.default,
    )
