"""deploy/grafana: the dashboard is well-formed Grafana JSON, every query parses as PromQL, and it
reads only metrics a real running collector exports."""

from __future__ import annotations

import json
import re
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    DEPLOY,
    LiveCollector,
    assert_reads_only_exported_metrics,
    promql_metric_names,
    tool,
)

DASHBOARD = DEPLOY / "grafana" / "flopwatch-dashboard.json"
GRID_COLUMNS = 24
PANEL_TYPES = {"row", "timeseries", "table", "stat"}
# Grafana's own variables, substituted before a query reaches Prometheus.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def as_promql(expr: str) -> str:
    """Substitute Grafana's variables the way Grafana does before querying Prometheus."""
    if expr.startswith("label_values("):  # a Grafana function, not PromQL: check its metric
        return expr.removeprefix("label_values(").partition(",")[0]
    for name, value in (("__rate_interval", "1m"), ("__range", "1h"), ("__interval", "30s")):
        expr = expr.replace(f"${name}", value)
    return re.sub(r"\$\w+", ".*", expr)


def test_dashboard_has_the_structure_grafana_imports() -> None:
    d = load()
    assert d["uid"] and d["title"].startswith("flopwatch")
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {p["type"] for p in d["panels"]} <= PANEL_TYPES
    boxes = []
    for p in d["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "xywh"), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= GRID_COLUMNS, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for a, b in combinations(boxes, 2):
        overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
        assert not overlap, f"panels {a[0]!r} and {b[0]!r} overlap"


def test_every_panel_says_what_its_numbers_are() -> None:
    """A description (estimate or upper bound, FLOPs, interval), a unit, the chosen datasource."""
    d = load()
    variables = {v["name"] for v in d["templating"]["list"]}
    assert "datasource" in variables
    for p in panels(d):
        assert len(p.get("description", "")) > 40, f"{p['title']}: describe what it shows"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in p["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= variables | BUILTIN_VARIABLES, f"{p['title']}: undefined {used}"


def test_dashboard_covers_what_operators_watch() -> None:
    by_title = {
        p["title"]: {m for t in p["targets"] for m in promql_metric_names(t["expr"])}
        for p in panels(load())
    }
    per_job = by_title["Cumulative FLOPs per job against thresholds"]
    assert {
        "flopwatch_job_flops_upper_total",
        "flopwatch_job_flops_total",
        "flopwatch_alert_threshold_flops",
    } <= per_job
    assert "flopwatch_gpu_flops_upper_total" in by_title["FLOP rate per node"]
    assert "flopwatch_gpu_flops_total" in by_title["FLOP rate per GPU (estimate)"]
    assert "flopwatch_records_rejected_total" in by_title["Records per second by outcome"]
    assert "flopwatch_run_flops_upper_total" in by_title["Top runs by FLOPs (upper bound)"]
    windows = by_title["Top accounts over trailing windows"]
    assert "flopwatch_account_window_flops_upper" in windows
    assert "flopwatch_account_energy_joules_total" in by_title["GPU energy per account"]
    liveness = set().union(*(by_title[t] for t in by_title if "node" in t.lower()))
    assert {"flopwatch_node_last_record_timestamp_seconds", "flopwatch_node_silent"} <= liveness


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), after Grafana's substitutions."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(e)}
                    for i, e in enumerate(queries(load()))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promql_check_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (("}]}]})
    )
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], check=False, capture_output=True
    )
    assert result.returncode != 0


def test_queries_read_only_metrics_the_collector_exports(live_collector: LiveCollector) -> None:
    """The names come from a real collector's /metrics, after it was fed every kind of record."""
    assert_reads_only_exported_metrics(queries(load()), live_collector)


def test_a_metric_the_collector_does_not_export_is_caught(live_collector: LiveCollector) -> None:
    with pytest.raises(AssertionError, match="flopwatch_job_flops_typo_total"):
        assert_reads_only_exported_metrics(
            ["rate(flopwatch_job_flops_typo_total[5m])"], live_collector
        )
