"""deploy/prometheus: scrape configuration and alerting rules, checked and unit-tested with
promtool, then a real Prometheus on loopback scraping a real collector and evaluating the rules."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    DEPLOY,
    LiveCollector,
    assert_reads_only_exported_metrics,
    tool,
)

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "flopwatch-alerts.yml"
RULE_TESTS = PROMETHEUS / "tests" / "flopwatch-alerts.test.yml"
ALERTS = {
    "FlopwatchJobThresholdCrossed",
    "FlopwatchRunOrAccountThreshold",
    "FlopwatchNodeSilent",
    "FlopwatchChainBroken",
    "FlopwatchRecordsMissing",
    "FlopwatchRecordsRejectedRising",
    "FlopwatchCollectorDown",
}
RECORDS = {
    "flopwatch:run_flops_upper:rate1h",
    "flopwatch:account_flops_upper:rate1h",
    "flopwatch:account_window_flops_upper:max",
}
DEADLINE_S = 60.0
T = TypeVar("T")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], check=False, capture_output=True, text=True, cwd=PROMETHEUS
    )


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_scrape_configuration_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_scrape_configuration_leaves_target_labels_to_prometheus() -> None:
    """flopwatch's per-job series carry `job_id`, so no clash needs honor_labels (which would
    let a scraped target overwrite Prometheus' own `job` and `instance` labels)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [collector] = [c for c in config["scrape_configs"] if c["job_name"] == "flopwatch-collector"]
    assert not collector.get("honor_labels", False)


def test_alerting_rules_are_valid_and_complete() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r["alert"] for r in rules() if "alert" in r} == ALERTS
    assert {r["record"] for r in rules() if "record" in r} == RECORDS
    for r in (r for r in rules() if "alert" in r):
        assert r["labels"]["severity"] in {"warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_alerting_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same cases against a rule that never fires: promtool reports the failures."""
    broken = yaml.safe_load(RULES.read_text())
    for r in broken["groups"][0]["rules"]:
        r["expr"] = "vector(1) == 0"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(broken))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    for alert in ALERTS:
        assert f"alertname: {alert}" in result.stdout + result.stderr


def test_rules_read_only_metrics_the_collector_exports(live_collector: LiveCollector) -> None:
    assert_reads_only_exported_metrics([r["expr"] for r in rules()], live_collector)


# --- a real Prometheus -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    """Call probe until it returns something other than None; fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.1)


class Prometheus:
    def __init__(self, base_url: str, process: subprocess.Popen[bytes]) -> None:
        self.base_url = base_url
        self.process = process

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool | None:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with code {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=2) as response:
                return True if response.status == 200 else None
        except (urllib.error.URLError, ConnectionError):
            return None


@pytest.fixture
def prometheus(tmp_path: Path, live_collector: LiveCollector) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1, scraping the live collector every second with the shipped
    collector scrape settings and evaluating the shipped alerting rules."""
    shipped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = [c for c in shipped["scrape_configs"] if c["job_name"] == "flopwatch-collector"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{live_collector.metrics_port}"]}]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [job],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        poll("prometheus to be ready", server.ready)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def sample_value(text: str, series: str) -> float:
    [line] = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    return float(line.rsplit(" ", 1)[1])


def test_prometheus_scrapes_the_collector_and_fires_the_threshold_alert(
    prometheus: Prometheus, live_collector: LiveCollector
) -> None:
    job = "slurm:c/81234"
    metrics = live_collector.metrics_text()
    upper = sample_value(metrics, f'flopwatch_job_flops_upper_total{{job_id="{job}"}}')
    accepted = sample_value(metrics, "flopwatch_records_accepted_total")

    def queried(query: str) -> list[dict[str, Any]] | None:
        result: list[dict[str, Any]] = prometheus.get("/api/v1/query", query=query)["result"]
        return result or None

    # 1. The per-job series comes back with its `job_id` label, same value, and the scrape
    #    job's own `job` label untouched.
    [series] = poll(
        "the job's FLOPs in Prometheus", lambda: queried("flopwatch_job_flops_upper_total")
    )
    assert series["metric"]["job_id"] == job
    assert series["metric"]["job"] == "flopwatch-collector"
    assert float(series["value"][1]) == upper
    # 2. Collector-wide series keep the scrape job's name.
    [records] = poll("accepted records", lambda: queried("flopwatch_records_accepted_total"))
    assert records["metric"]["job"] == "flopwatch-collector"
    assert float(records["value"][1]) == accepted

    # 3. The shipped rules load, evaluate without error, and the threshold alert fires.
    def firing() -> list[dict[str, Any]] | None:
        alerts = prometheus.get("/api/v1/alerts")["alerts"]
        hits = [
            a
            for a in alerts
            if a["labels"]["alertname"] == "FlopwatchJobThresholdCrossed" and a["state"] == "firing"
        ]
        return hits or None

    [alert] = poll("FlopwatchJobThresholdCrossed to fire", firing)
    assert alert["labels"]["job_id"] == job
    assert alert["labels"]["threshold"] == str(10**12)
    assert alert["annotations"]["summary"] == f"Job {job} crossed {10**12} FLOPs"
    groups = prometheus.get("/api/v1/rules")["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == ALERTS | RECORDS
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}
