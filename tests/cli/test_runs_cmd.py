"""`flopwatch runs` and `flopwatch accounts` against a running collector: a run spanning two jobs
on two nodes, its account, a job of no account, tables that say what each figure is, JSON for
scripts, the account filter, and paging one row at a time."""

from __future__ import annotations

import json

import pytest

from flopwatch.cli.runs_cmd import Next, as_json, table
from flopwatch.collector.alerts.scopes import parse_rules
from flopwatch.runs import WorkloadClass
from flopwatch.v1 import collector_pb2
from tests.cli.test_jobs_cmd import serve_and_ask
from tests.collector.server_helpers import enroll, past_node, submit
from tests.nodes import by_account, expected_runs


@pytest.fixture
def fleet():
    """Run llama of acme: job 1 on node-a, restarted as job 2 on node-b; a fine-tune run of
    acme; job 4 of no declared run or account."""
    a = past_node("node-a", gpus=2, job="slurm:c/1", run="llama", account="acme")
    b = past_node("node-b", job="slurm:c/2", run="llama", account="acme")
    for n in (a, b):
        n.labels["workload_class"] = WorkloadClass.PRETRAINING
    tune = past_node("node-c", job="slurm:c/3", run="llama-ft", account="acme")
    tune.labels["workload_class"] = WorkloadClass.FINE_TUNING
    plain = past_node("node-d", job="slurm:c/4")
    nodes = [a, b, tune, plain]
    first = a.envelopes(2)
    b.t = a.t  # the restart carries on where the first job stopped
    envs = [*first, *b.envelopes(3), *tune.envelopes(1), *plain.envelopes(2)]
    return nodes, envs


def test_runs_and_accounts_tables_and_json(tmp_path, capsys, fleet):
    nodes, envs = fleet
    db = tmp_path / "c.db"
    enroll(db, *nodes)

    async def setup(channel):
        await submit(channel, envs)

    asks = [
        ["runs"],
        ["runs", "--json", "--page-size", "1"],
        ["runs", "--json", "--account", "acme", "--prefix", "llama-"],
        ["runs", "--json", "--account", "(none)"],
        ["accounts"],
        ["accounts", "--json", "--page-size", "1"],
    ]
    out = serve_and_ask(db, asks, capsys, setup, command=None)
    assert [code for code, _, _ in out] == [0] * len(asks), out
    runs_table, runs_json, tune_json, none_json, accounts_table, accounts_json = (
        o for _, o, _ in out
    )
    expected = expected_runs(nodes, envs)

    header = runs_table.splitlines()[0].split("  ")
    for column in ("ACCOUNT", "RUN", "CLASSES", "FLOPs (estimate)", "FLOPs (upper bound)"):
        assert column in header
    assert "GPU energy (kWh)" in runs_table.splitlines()[0]
    llama = next(line for line in runs_table.splitlines() if "llama " in line)
    assert llama.startswith("acme") and "pretraining" in llama
    assert f"{expected[('acme', 'llama')][1]:.4e}" in llama
    none = next(line for line in runs_table.splitlines() if "slurm:c/4" in line)
    assert none.startswith("(none)") and "unknown" in none
    assert "GPU energy: GPU boards only" in runs_table

    doc = json.loads(runs_json)
    got = {
        (r["account"], r["run"]): [
            r["flops"],
            r["flops_upper"],
            r["gpu_intervals"],
            r["gpu_seconds"],
            r["energy_kwh"],
        ]
        for r in doc["runs"]
    }
    assert got == {
        k: [e, u, n, fs / 1e15, nj / 3.6e15] for k, (e, u, n, fs, nj) in expected.items()
    }
    assert [r["run"] for r in doc["runs"]] == ["slurm:c/4", "llama", "llama-ft"]
    assert doc["runs"][1]["classes"] == ["pretraining"]
    assert doc["runs"][1]["gpu_seconds"] == 7.0  # 2 records x 2 GPUs + 3 records x 1 GPU
    assert "not host" in doc["legend"]["energy_kwh"]
    assert [r["run"] for r in json.loads(tune_json)["runs"]] == ["llama-ft"]
    assert [(r["account"], r["run"]) for r in json.loads(none_json)["runs"]] == [("", "slurm:c/4")]

    lines = accounts_table.splitlines()
    assert "SCOPE" in lines[0] and "GPU energy (kWh)" in lines[0]
    acme = next(i for i, line in enumerate(lines) if line.startswith("acme"))
    assert "all time" in lines[acme] and lines[acme].split()[1] == "2"  # two runs
    assert "pretraining,fine-tuning" in lines[acme]
    for i, scope in enumerate(("last 30 days (", "last 90 days (", "last 365 days (")):
        assert scope in lines[acme + 1 + i]
    assert all(f"{by_account(expected)['acme'][1]:.4e}" in lines[acme + i] for i in range(4))
    assert "trailing UTC days through today" in accounts_table

    accounts = json.loads(accounts_json)["accounts"]
    assert [a["account"] for a in accounts] == ["", "acme"]
    [none_acc, acme_acc] = accounts
    totals = by_account(expected)
    assert acme_acc["all_time"]["flops_upper"] == totals["acme"][1]
    assert acme_acc["all_time"]["energy_kwh"] == totals["acme"][4] / 3.6e15
    assert [w["days"] for w in acme_acc["windows"]] == [30, 90, 365]
    assert all(w["flops_upper"] == totals["acme"][1] for w in acme_acc["windows"])  # yesterday
    w30 = acme_acc["windows"][0]
    assert w30["end_unix_ns"] - w30["start_unix_ns"] == 30 * 86400 * 10**9
    assert (none_acc["runs"], none_acc["classes"]) == (1, ["unknown"])


def test_the_next_threshold_of_a_run_and_the_time_to_it():
    hour = 3600 * 10**9
    # 3.6e24 FLOPs (upper bound) over 1 h: 1e21 FLOP/s; 1e25 is 6.4e3 s away.
    steady = collector_pb2.RunTotal(
        account="acme",
        run="llama",
        flops_estimate=str(10**24),
        flops_upper=str(36 * 10**23),
        first_start_unix_ns=0,
        last_end_unix_ns=hour,
    )
    young = collector_pb2.RunTotal(
        run="r", flops_estimate="5", flops_upper="5", last_end_unix_ns=hour // 2
    )
    done = collector_pb2.RunTotal(run="big", flops_estimate=str(10**27), flops_upper=str(10**27))
    nxt = Next(parse_rules("eu-ai-act,us-ca-sb53"), "upper")
    rule, secs = nxt.of(steady)
    assert (rule.threshold, rule.name) == (10**25, "eu-ai-act") and secs == pytest.approx(6400)
    assert nxt.shown(steady) == "1e+25 eu-ai-act in 0.1 d"
    assert nxt.shown(young) == "1e+23 eu-ai-act no rate yet"  # under an hour measured
    assert nxt.shown(done) == "-"
    by_estimate = Next(parse_rules("eu-ai-act"), "estimate")
    assert by_estimate.of(steady)[0].threshold == 10**25
    assert by_estimate.of(steady)[1] == pytest.approx((10**25 - 10**24) / (10**24 / 3600))

    resp = collector_pb2.ListRunsResponse(runs=[steady, done], flop_model_version="1")
    lines = table(resp, nxt).splitlines()
    assert lines[0].rstrip().endswith("NEXT") and lines[1].rstrip().endswith("in 0.1 d")
    docs = as_json(resp, nxt)["runs"]
    assert docs[0]["next_threshold"]["flops"] == str(10**25)
    assert docs[0]["next_threshold"]["seconds"] == pytest.approx(6400)
    assert docs[1]["next_threshold"] is None

    # A derived run: NEXT counts its cumulative figure (5e24 inherited), at its own rate.
    tuned = collector_pb2.RunTotal(
        account="acme",
        run="llama-ft",
        flops_estimate=str(10**24),
        flops_upper=str(36 * 10**23),
        cumulative_flops_estimate=str(6 * 10**24),
        cumulative_flops_upper=str(86 * 10**23),
        first_start_unix_ns=0,
        last_end_unix_ns=hour,
        parent_account="acme",
        parent_run="llama",
    )
    rule, secs = nxt.of(tuned)
    assert rule.threshold == 10**25 and secs == pytest.approx(1400)  # 1.4e24 at 1e21 FLOP/s
