"""deploy/kubernetes: every manifest is valid against the Kubernetes schemas (offline, strict, via
kubernetes-validate), the ServiceMonitors against the vendored CRD schema, and the kustomize base
and example overlay render (kubectl kustomize) to the same valid objects."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flopwatch.agent.attribution.kubeowners import KINDS
from flopwatch.cli.main import build_parser
from flopwatch.cli.main import main as flopwatch
from tests.deploy.deploy_helpers import DEPLOY

KUBE = DEPLOY / "kubernetes"
BASE = KUBE / "base"
SERVICEMONITOR_SCHEMA = KUBE / "schemas" / "servicemonitor_v1.json"
# The oldest Kubernetes release still commonly run, and the newest the package knows.
KUBERNETES_VERSIONS = ["1.28.0", kubernetes_validate.utils.latest_version()]
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in documents(BASE / name)]


def validate(doc: dict[str, Any], version: str) -> None:
    """Raise on an invalid object: Kubernetes kinds by their schema, ServiceMonitor by the CRD's."""
    if doc["apiVersion"] == PROMETHEUS_OPERATOR:
        assert doc["kind"] == "ServiceMonitor", doc["kind"]
        schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
        jsonschema.Draft7Validator(schema).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def test_kustomization_lists_every_manifest_in_the_base() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    manifests = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_base_manifests_are_valid(version: str) -> None:
    docs = base_resources()
    assert {d["kind"] for d in docs} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ServiceMonitor",
    }
    for doc in docs:
        validate(doc, version)


def test_strict_validation_catches_a_misspelt_field() -> None:
    daemonset = copy.deepcopy(by_kind(base_resources(), "DaemonSet", "flopwatch-agent"))
    daemonset["spec"]["template"]["spec"]["hostPid"] = True  # hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(daemonset, KUBERNETES_VERSIONS[-1])


def test_servicemonitor_schema_catches_mistakes() -> None:
    monitor = by_kind(base_resources(), "ServiceMonitor", "flopwatch-collector")
    for spoil in (
        lambda m: m["spec"]["endpoints"][0].update(intervall="30s"),  # misspelt field
        lambda m: m["spec"]["endpoints"][0].update(interval="30 seconds"),  # not a duration
        lambda m: m["spec"].pop("selector"),  # required
    ):
        bad = copy.deepcopy(monitor)
        spoil(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, KUBERNETES_VERSIONS[-1])


def test_agent_daemonset_reaches_gpus_and_pod_resources_read_only() -> None:
    daemonset = by_kind(base_resources(), "DaemonSet", "flopwatch-agent")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["hostPID"] is True
    [agent] = pod["containers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    pod_resources = mounts["pod-resources"]
    assert pod_resources["mountPath"] == "/var/lib/kubelet/pod-resources"
    assert pod_resources["readOnly"] is True
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    # The node key must outlive the pod: it is the node's enrolled identity.
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/flopwatch-agent"
    assert "--state-dir=/var/lib/flopwatch-agent" in agent["args"]
    security = agent["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_collector_runs_non_root_with_one_writer() -> None:
    docs = base_resources()
    deployment = by_kind(docs, "Deployment", "flopwatch-collector")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # SQLite: never two writers
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "flopwatch-collector-tls"
    service = by_kind(docs, "Service", "flopwatch-collector")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 7443,
        "metrics": 9464,
    }
    monitor = by_kind(docs, "ServiceMonitor", "flopwatch-collector")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    # Per-job series label the flopwatch job `job_id`: no clash with Prometheus' `job`, so the
    # monitor must not hand targets control of target labels.
    assert endpoint["port"] == "metrics" and not endpoint.get("honorLabels", False)


def test_collector_probes_ask_grpc_health_on_the_plaintext_health_port() -> None:
    """The kubelet's gRPC probes present no client certificate: they go to health_listen, the
    port that carries grpc.health.v1.Health alone, never to the mTLS port."""
    deployment = by_kind(base_resources(), "Deployment", "flopwatch-collector")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 7443, "metrics": 9464, "health": 7444}
    for probe in ("readinessProbe", "livenessProbe"):
        assert set(container[probe]) - {"initialDelaySeconds", "periodSeconds"} == {"grpc"}
        assert container[probe]["grpc"] == {"port": ports["health"]}  # service "": the server
    config = tomllib.loads((BASE / "collector.toml").read_text())
    assert config["health_listen"] == f"0.0.0.0:{ports['health']}"
    assert config["listen"] == f"0.0.0.0:{ports['grpc']}"


def test_the_agent_reads_only_the_metadata_its_kubernetes_source_needs() -> None:
    """The ClusterRole grants read verbs only: list and watch on pods and namespaces, get on
    exactly the controller kinds the walk up from a pod reads (kubeowners.KINDS, read=True),
    bound to the agent's own service account, which the DaemonSet runs as."""
    docs = base_resources()
    role = by_kind(docs, "ClusterRole", "flopwatch-agent")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    read = {(k.group, k.plural) for k in KINDS.values() if k.read}
    expected = {key: {"get"} for key in read}
    expected[("", "pods")] = {"get", "list", "watch"}
    expected[("", "namespaces")] = {"get", "list", "watch"}
    assert granted == expected
    binding = by_kind(docs, "ClusterRoleBinding", "flopwatch-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = by_kind(docs, "ServiceAccount", "flopwatch-agent")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "flopwatch"}
    ]
    pod = by_kind(docs, "DaemonSet", "flopwatch-agent")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True  # the token the API server checks
    [agent] = pod["containers"]
    # The node whose pods it watches comes from the downward API.
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "--k8s-node=$(NODE_NAME)" in agent["args"]
    config = tomllib.loads((BASE / "agent.toml").read_text())
    assert config["k8s_api"] == "auto"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize built in) is not installed on this machine")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_base_renders_with_kustomize_into_valid_objects() -> None:
    docs = kustomize(BASE)
    for doc in docs:
        validate(doc, KUBERNETES_VERSIONS[-1])
        assert doc["kind"] in CLUSTER_SCOPED or doc["metadata"]["namespace"] == "flopwatch"
    config = by_kind(docs, "ConfigMap", "flopwatch-agent-config")
    assert 'collector = "flopwatch-collector.flopwatch.svc:7443"' in config["data"]["agent.toml"]
    daemonset = by_kind(docs, "DaemonSet", "flopwatch-agent")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    collector = by_kind(docs, "Deployment", "flopwatch-collector")
    [container] = collector["spec"]["template"]["spec"]["containers"]
    assert (
        container["readinessProbe"]["grpc"] == container["livenessProbe"]["grpc"] == {"port": 7444}
    )
    collector_config = by_kind(docs, "ConfigMap", "flopwatch-collector-config")
    assert 'health_listen = "0.0.0.0:7444"' in collector_config["data"]["collector.toml"]


def test_example_overlay_renders_with_certificates_from_flopwatch_certs(tmp_path: Path) -> None:
    """The documented path: `flopwatch certs` output in pki/, then kustomize."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBE, tree)
    overlay = tree / "overlays" / "example"
    pki = overlay / "pki"
    assert flopwatch(["certs", "ca", "--out", str(pki)]) == 0
    dns = ["flopwatch-collector.flopwatch.svc"]
    issue = ["certs", "issue", "--ca-dir", str(pki), "--out", str(pki)]
    assert flopwatch([*issue, "--name", "collector", "--server", "--dns", *dns]) == 0
    assert flopwatch([*issue, "--name", "agent", "--client"]) == 0
    docs = kustomize(overlay)
    for doc in docs:
        validate(doc, KUBERNETES_VERSIONS[-1])
    secret = by_kind(docs, "Secret", "flopwatch-collector-tls")
    assert set(secret["data"]) == {"ca.pem", "collector.pem", "collector.key"}
    assert "ca.key" not in by_kind(docs, "Secret", "flopwatch-agent-tls")["data"]
    deployment = by_kind(docs, "Deployment", "flopwatch-collector")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == secret["metadata"]["name"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.org/flopwatch/collector:0.1.0"


@pytest.mark.parametrize(
    ("kind", "name", "command"),
    [("DaemonSet", "flopwatch-agent", "agent"), ("Deployment", "flopwatch-collector", "collector")],
)
def test_container_args_use_flags_flopwatch_accepts(kind: str, name: str, command: str) -> None:
    workload = by_kind(base_resources(), kind, name)
    [container] = workload["spec"]["template"]["spec"]["containers"]
    args = [a.replace("$(NODE_NAME)", "gpu-node-1") for a in container["args"]]
    parsed = build_parser().parse_args(args)  # exits 2 on an unknown flag
    assert parsed.command == command
    assert str(parsed.config) == f"/etc/flopwatch/config/{command}.toml"
