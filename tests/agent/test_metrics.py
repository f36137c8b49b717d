"""The agent's Prometheus metrics: families from a snapshot (fresh registry per test), and the
live endpoint of a running agent."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from flopwatch.agent.attribution.kubemeta import KubeStatus
from flopwatch.agent.backends.base import ProcessShare
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.metrics import AgentSnapshot, AgentStats, GpuRate, register_agent_metrics
from flopwatch.v1 import attestation_pb2 as pb
from tests.agent.agent_fakes import FakeCollector, running_agent, start_sync
from tests.agent.backends.tick_backend import TickBackend, wait_until

GPU = ("GPU-0", "0", "NVIDIA H100 80GB HBM3")


def snapshot() -> AgentSnapshot:
    return AgentSnapshot(
        node_id="n1",
        cluster="c",
        gpus=[
            GpuRate(
                uuid="GPU-0",
                index=0,
                name="NVIDIA H100 80GB HBM3",
                method="gpm",
                interval_s=0.5,
                end_unix_s=1_700_000_001.0,
                flops_estimate=4 * 10**14,
                flops_upper=10**15,
                pipe_active={"hmma": 0.25, "fp32": 0.5},
            )
        ],
        records_signed=7,
        sampling_errors=2,
        gaps={"sampling_error": 2, "agent_restart": 1},
        spool_records=3,
        spool_bytes=4096,
        records_acked=4,
        records_rejected=1,
        last_ack_unix_s=1_700_000_000.5,
        attribution_errors={"kubernetes": 5},
        labels_refused={"run": 3},
    )


def test_families_come_from_the_snapshot() -> None:
    registry = CollectorRegistry()
    register_agent_metrics(registry, snapshot)
    value = registry.get_sample_value
    labels = dict(zip(["uuid", "index", "name"], GPU, strict=True))
    assert value("flopwatch_agent_gpu_flops_per_second", labels) == 8e14
    assert value("flopwatch_agent_gpu_flops_per_second_upper", labels) == 2e15
    assert value("flopwatch_agent_gpu_pipe_active_ratio", labels | {"pipe": "hmma"}) == 0.25
    assert value("flopwatch_agent_gpu_pipe_active_ratio", labels | {"pipe": "fp32"}) == 0.5
    assert (
        value("flopwatch_agent_gpu_last_interval_end_timestamp_seconds", labels | {"method": "gpm"})
        == 1_700_000_001.0
    )
    assert value("flopwatch_agent_spool_records") == 3
    assert value("flopwatch_agent_spool_bytes") == 4096
    assert value("flopwatch_agent_last_ack_timestamp_seconds") == 1_700_000_000.5
    assert value("flopwatch_agent_records_signed_total") == 7
    assert value("flopwatch_agent_records_acked_total") == 4
    assert value("flopwatch_agent_records_rejected_total") == 1
    assert value("flopwatch_agent_sampling_errors_total") == 2
    assert value("flopwatch_agent_gaps_total", {"reason": "agent_restart"}) == 1
    assert value("flopwatch_agent_attribution_errors_total", {"source": "kubernetes"}) == 5
    assert value("flopwatch_agent_labels_refused_total", {"field": "run"}) == 3
    assert value("flopwatch_agent_labels_refused_total", {"field": "account"}) == 0
    info = {"node": "n1", "cluster": "c"}
    assert any(
        s.labels.items() >= info.items()
        for m in registry.collect()
        if m.name == "flopwatch_agent_info"
        for s in m.samples
    )


def test_kubernetes_families_come_with_the_api_servers_status() -> None:
    registry = CollectorRegistry()
    status = KubeStatus(api_up=False, pods_cached=12, api_errors=4, relists=3, fallback_windows=9)
    register_agent_metrics(registry, lambda: replace(snapshot(), kubernetes=status))
    value = registry.get_sample_value
    assert value("flopwatch_agent_k8s_api_up") == 0
    assert value("flopwatch_agent_k8s_pods_cached") == 12
    assert value("flopwatch_agent_k8s_fallback_windows_total") == 9
    assert value("flopwatch_agent_k8s_api_errors_total") == 4
    assert value("flopwatch_agent_k8s_relists_total") == 3
    plain = CollectorRegistry()  # no Kubernetes API asked: no such families
    register_agent_metrics(plain, snapshot)
    assert plain.get_sample_value("flopwatch_agent_k8s_api_up") is None


def test_help_says_what_the_rates_are() -> None:
    registry = CollectorRegistry()
    register_agent_metrics(registry, snapshot)
    helps = {m.name: m.documentation for m in registry.collect()}
    assert "estimate" in helps["flopwatch_agent_gpu_flops_per_second"]
    assert "FLOPs per second" in helps["flopwatch_agent_gpu_flops_per_second"]
    assert "last measured interval" in helps["flopwatch_agent_gpu_flops_per_second"]
    assert "upper bound" in helps["flopwatch_agent_gpu_flops_per_second_upper"]


def test_no_ack_yet_means_no_last_ack_sample() -> None:
    registry = CollectorRegistry()
    register_agent_metrics(registry, lambda: AgentSnapshot(node_id="n", cluster="c"))
    assert registry.get_sample_value("flopwatch_agent_last_ack_timestamp_seconds") is None
    assert registry.get_sample_value("flopwatch_agent_records_signed_total") == 0


def test_stats_take_the_latest_interval_per_gpu_and_count_gaps() -> None:
    stats = AgentStats()
    att = pb.Attestation(
        gpus=[pb.GpuIdentity(uuid="GPU-0", name="H100", index=0)],
        intervals=[
            pb.GpuInterval(
                gpu=0,
                start_unix_ns=0,
                end_unix_ns=10**9,
                elapsed_sm_cycles=1000,
                active_sm_cycles=pb.PipeCycles(hmma=100),
                flops_estimate=5,
                flops_upper=9,
                method=pb.METHOD_GPM,
            ),
            pb.GpuInterval(
                gpu=0,
                start_unix_ns=10**9,
                end_unix_ns=3 * 10**9,
                elapsed_sm_cycles=1000,
                active_sm_cycles=pb.PipeCycles(hmma=400),
                flops_estimate=20,
                flops_upper=40,
                method=pb.METHOD_GPM,
            ),
        ],
        gaps=[pb.Gap(gpu=0, reason=pb.GAP_REASON_SPOOL_OVERFLOW)],
    )
    stats.observe([], att)
    s = stats.snapshot("n", "c")
    [g] = s.gpus
    assert (g.rate_estimate, g.rate_upper, g.pipe_active["hmma"]) == (10.0, 20.0, 0.4)
    assert (s.records_signed, s.gaps) == (1, {"spool_overflow": 1})


@pytest.fixture
def collector() -> Iterator[tuple[FakeCollector, int]]:
    fake = FakeCollector()
    server, port = start_sync(fake)
    yield fake, port
    server.stop(None)


def scrape(port: int) -> Callable[..., float]:
    """GET /metrics; returns value(metric, **labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return lambda metric, /, **labels: samples[(metric, frozenset(labels.items()))]


def test_a_running_agent_serves_its_metrics(
    tmp_path: Path, collector: tuple[FakeCollector, int]
) -> None:
    fake, port = collector
    config = AgentConfig(
        collector=f"127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        node_id="node-m",
        cluster="lab",
        insecure=True,
        metrics_listen="127.0.0.1:0",
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
    )
    backend = TickBackend()
    with running_agent(config, backend) as agent:
        assert agent.metrics_port
        backend.tick((ProcessShare(1, 1.0),))
        backend.tick(error="NVML: GPU is lost")
        wait_until(lambda: len(fake.held) == 2, "two records acknowledged")
        wait_until(lambda: agent.snapshot().spool_records == 0, "the spool to empty")
        m = scrape(agent.metrics_port)
    gpu = {"uuid": "GPU-tick-0", "index": "0", "name": "NVIDIA H100 80GB HBM3"}
    estimate = m("flopwatch_agent_gpu_flops_per_second", **gpu)
    upper = m("flopwatch_agent_gpu_flops_per_second_upper", **gpu)
    assert 0 < estimate <= upper
    # 132 SMs at 1500 MHz: HMMA 50% busy at bf16 (4096 FLOP/clock/SM), FP32 10% (256)
    assert estimate == pytest.approx(132 * 1500e6 * (0.5 * 4096 + 0.1 * 256), rel=1e-6)
    assert m("flopwatch_agent_gpu_pipe_active_ratio", pipe="hmma", **gpu) == pytest.approx(0.5)
    assert m("flopwatch_agent_records_signed_total") == 2
    assert m("flopwatch_agent_sampling_errors_total") == 2  # both GPUs of the second tick
    assert m("flopwatch_agent_gaps_total", reason="sampling_error") == 2
    assert m("flopwatch_agent_spool_records") == 0
    assert m("flopwatch_agent_records_acked_total") == 2
    assert m("flopwatch_agent_last_ack_timestamp_seconds") > 1.7e9
