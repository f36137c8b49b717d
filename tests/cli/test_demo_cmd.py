"""`flopwatch demo`: the trace split across two nodes, the jobs file's runs and accounts, and a
whole demo at high speed ending with the runs and accounts tables."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flopwatch.cli import demo_cmd

TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "h100-trace-1"


def _intervals(path: Path) -> list[dict[str, float]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if '"type": "interval"' in ln]


def test_the_trace_splits_at_the_restart_into_two_parts_that_keep_every_interval(tmp_path):
    at = demo_cmd.restart_time(TRACE / "jobs.json")
    assert at is not None
    first, second = demo_cmd.split_trace(TRACE / "trace.jsonl", tmp_path, at)
    whole = _intervals(TRACE / "trace.jsonl")
    a, b = _intervals(first), _intervals(second)
    assert a + b == whole
    assert a and b
    assert max(i["t1"] for i in a) <= at < min(i["t1"] for i in b)
    for part in (first, second):  # each part is a trace of its own: the GPU's metadata first
        assert json.loads(part.read_text().splitlines()[0])["type"] == "meta"


def test_jobs_gain_the_demo_runs_and_accounts(tmp_path):
    jobs = json.loads(demo_cmd.labelled_jobs(TRACE / "jobs.json", tmp_path).read_text())
    by_job = {j["job"]: j for j in jobs}
    assert by_job["c1"]["run"] == by_job["t1"]["run"] == "llm-demo"
    assert by_job["c1"]["account"] == "acme"
    assert by_job["a1"]["account"] == "lab-b"
    assert "run" not in by_job["a1"]
    assert (by_job["g1"]["run"], by_job["g1"]["class"]) == (demo_cmd.DERIVED_RUN, "fine-tuning")
    assert by_job["g1"]["parent"] == "llm-demo"  # the workload declares its parent


def test_demo_shows_one_run_across_two_nodes_and_its_account(capsys: pytest.CaptureFixture[str]):
    args = argparse.Namespace(
        trace_dir=TRACE, speed=1000.0, threshold="1e16", run_thresholds="eu-ai-act,1e17"
    )
    assert demo_cmd.run(args) == 0
    out = capsys.readouterr().out
    runs = out.split("Runs (`flopwatch runs`)")[1].split("Accounts (`flopwatch accounts`)")[0]
    rows = {ln.split()[1]: ln.split() for ln in runs.splitlines() if ln.startswith("acme ")}
    row, ft = rows["llm-demo"], rows[demo_cmd.DERIVED_RUN]
    assert row[:3] == ["acme", "llm-demo", "pretraining"]
    jobs = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln[:3] in ("c1 ", "t1 ")}
    # The run's estimate is its two jobs' estimates (one per node) added up.
    assert float(row[3]) == pytest.approx(float(jobs["c1"][1]) + float(jobs["t1"][1]), rel=1e-3)
    assert "unattributed:demo/demo-node-1" in out and "unattributed:demo/demo-node-2" in out
    accounts = out.split("Accounts (`flopwatch accounts`)")[1]
    assert any(ln.startswith("acme ") and "all time" in ln for ln in accounts.splitlines())
    assert "last 30 days" in accounts

    # The derived fine-tuning run: declared from its records (nobody ran `runs declare`), its
    # cumulative its own plus llm-demo's.
    assert "derives from 'llm-demo' of account 'acme'" in out
    assert "declared by the workload (its record " in out
    [ft] = [
        ln.split() for ln in runs.splitlines() if ln.startswith("acme ") and "llm-demo-ft" in ln
    ]
    assert ft[:3] == ["acme", "llm-demo-ft", "fine-tuning"] and ft[-3] == "acme/llm-demo"
    assert float(ft[-2]) == pytest.approx(float(ft[3]) + float(row[3]), rel=1e-3)
    assert ft[-1] == "yes"  # above a third of llm-demo's compute
    # A forecast alert of llm-demo at the lowered run threshold, and the derived-run alert of
    # llm-demo-ft (decided as its records came, its lineage declared from them).
    alerts = out.split("Run alerts")[1].split("Runs (`flopwatch runs`)")[0]
    assert any(
        ln.startswith("ALERT: run llm-demo-ft (account acme): its own FLOPs")
        and "above a third of its parent's cumulative compute" in ln
        for ln in alerts.splitlines()
    )
    assert any(
        ln.startswith("ALERT: run llm-demo (account acme): at its current rate") and "1e+17" in ln
        for ln in alerts.splitlines()
    )
