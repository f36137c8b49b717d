"""`flopwatch report JOB --sampled` and `flopwatch verify` of what it writes, end to end against
a collector's database."""

from __future__ import annotations

import json

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.store.factory import open_store
from tests.cli.test_report_verify_cmd import filled_db, key_id
from tests.nodes import Node, expected_totals


def test_sampled_report_then_verify(tmp_path, capsys):
    a, b = Node("a", gpus=2), Node("b", job="other")
    db, envs = filled_db(tmp_path, [a, b], each=20)
    out = tmp_path / "a.sampled"
    args = ["report", a.job, "--db", db, "--out", str(out), "--sampled"]
    assert main([*args, "--samples", "50", "--probes", "50", "--challenge", "c0ffee"]) == 0
    printed = capsys.readouterr().out
    assert "20 records in log leaves 0..38" in printed and "--challenge c0ffee" in printed

    trust = ["--collector-key", key_id(db), "--min-samples", "50", "--min-probes", "50"]
    assert main(["verify", str(out), *trust, "--challenge", "c0ffee"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[ok]") == 10 and "[skip] 11." in printed
    estimate, upper = expected_totals([a, b], envs)[a.job]
    assert f"exactly {estimate})" in printed and f"exactly {upper})" in printed
    assert "VERIFIED (sampled)" in printed and "5.816%" in printed  # 1 - 0.05^(1/50)

    assert main(["verify", str(out), *trust, "--challenge", "c0ffee", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "sampled" and summary["flops_estimate"] == str(estimate)
    assert summary["records"] == 20 and summary["gpu_intervals"] == 40

    # The regulator's defaults ask for 3,000 samples; another challenge is refused.
    assert main(["verify", str(out), "--collector-key", key_id(db)]) == 1
    assert "too_few_samples" in capsys.readouterr().out
    assert main(["verify", str(out), *trust, "--challenge", "beef"]) == 1
    assert "FAILED at step 4 (challenge_mismatch)" in capsys.readouterr().out


def test_sampled_report_refuses_bad_options(tmp_path, capsys):
    a = Node("a")
    db, _ = filled_db(tmp_path, [a], each=2)
    out = str(tmp_path / "x")
    base = ["report", a.job, "--db", db, "--out", out]
    assert main([*base, "--sampled", "--challenge", "zz"]) == 2
    assert main([*base, "--sampled", "--archive", out]) == 2
    assert main([*base, "--challenge", "00"]) == 2
    assert main([*base, "--sampled", "--samples", "0"]) == 2
    with pytest.raises(SystemExit):
        main([*base, "--sampled", "--samples", "1000001"])
    assert main(["report", "nope", "--db", db, "--out", out, "--sampled"]) == 2


def test_sampled_run_report_then_verify(tmp_path, capsys):
    """A run of two jobs on two nodes: the report's totals are the run's, as `runs` lists."""
    a = Node("a", job="slurm:c/1", run="llama", account="acme", gpus=2)
    b = Node("b", job="slurm:c/2", run="llama", account="acme")
    c = Node("c", job="slurm:c/3")
    db, _ = filled_db(tmp_path, [a, b, c], each=4)
    out = tmp_path / "llama.sampled"
    args = ["report", "--run", "llama", "--account", "acme", "--db", db, "--out", str(out)]
    assert main([*args, "--sampled", "--samples", "20", "--probes", "20"]) == 0
    printed = capsys.readouterr().out
    assert "run 'llama' of account 'acme', 8 records in log leaves 0..10" in printed

    trust = ["--collector-key", key_id(db), "--min-samples", "20", "--min-probes", "20"]
    assert main(["verify", str(out), *trust]) == 0
    printed = capsys.readouterr().out
    assert "claims run 'llama' of account 'acme' performed" in printed
    assert main(["verify", str(out), *trust, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["scope"], summary["run"], summary["account"]) == ("run", "llama", "acme")
    store = open_store(db)  # what ListRuns (`flopwatch runs`) serves
    try:
        [run] = store.run_page("acme", "llama", ("", ""), 1)
    finally:
        store.close()
    assert summary["flops_estimate"] == str(run.flops_estimate)
    assert summary["flops_upper"] == str(run.flops_upper)
    assert summary["gpu_intervals"] == run.gpu_intervals == 12


def test_sampled_run_report_refuses_bad_options(tmp_path, capsys):
    a = Node("a", run="llama", account="acme")
    db, _ = filled_db(tmp_path, [a], each=2)
    out = str(tmp_path / "x")
    base = ["report", "--run", "llama", "--account", "acme", "--db", db, "--out", out]
    capsys.readouterr()
    assert main(base) == 2  # a run report is sampled: the reason, and what to do instead
    err = " ".join(capsys.readouterr().err.split())
    assert "--run needs --sampled" in err and "flopwatch report JOB" in err
    assert not (tmp_path / "x").exists()
    assert main([*base, "--sampled", a.job]) == 2  # a job or a run
    assert main(["report", "--db", db, "--out", out, "--sampled"]) == 2  # neither
    assert main(["report", a.job, "--account", "acme", "--db", db, "--out", out]) == 2
    assert main([*base[:4], "bad\nacct", *base[5:], "--sampled"]) == 2
    assert main(["report", "--run", "llama", "--db", db, "--out", out, "--sampled"]) == 2
    assert "no total of run 'llama' of account '(none)'" in capsys.readouterr().err
