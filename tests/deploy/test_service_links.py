"""Both programs start, as real processes, in the environment a Kubernetes pod gets when
service links are on: FLOPWATCH_*_SERVICE_HOST-style variables for the project's own Services
(`flopwatch.cli.service_links`). The collector serves gRPC health, and an agent on the simulator
gets a record accepted. The manifests turn the links off as well (`enableServiceLinks: false`).
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cli.test_config_file import KUBERNETES_SERVICE_LINKS
from tests.deploy.deploy_helpers import DEPLOY
from tests.faults.processes import CliAgent, CollectorProcess
from tests.faults.waits import wait_until


def test_both_programs_start_with_kubernetes_service_variables_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KUBERNETES_SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)  # the children inherit them
    collector = CollectorProcess(tmp_path / "c.db", tmp_path / "collector.log", ())
    agent = CliAgent(tmp_path / "agent.log")
    try:
        collector.start()
        with grpc.insecure_channel(collector.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        agent.start(collector.address, tmp_path / "agent-state", "k8s-node")
        accepted = re.compile(r"trust on first use: enrolled key \w+ for node k8s-node")

        def record_accepted() -> bool:
            if not agent.running:
                raise AssertionError(f"agent exited:\n{agent.tail()}")
            return bool(accepted.search(collector.text()))

        wait_until(record_accepted, "the agent's first record to be accepted", 60)
        assert "unknown environment variable" not in agent.text() + collector.text()
    finally:
        agent.stop()
        collector.stop()


def test_every_pod_template_turns_service_links_off() -> None:
    pods = []
    for path in sorted((DEPLOY / "kubernetes" / "base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
                pods.append((path.name, doc["spec"]["template"]["spec"]))
    assert len(pods) == 2
    for name, pod in pods:
        assert pod.get("enableServiceLinks") is False, name
