"""`flopwatch report --run RUN --sampled --format in-toto` (and `JOB --sampled --format in-toto`)
and `flopwatch verify REPORT --in-toto STATEMENT`, end to end against a collector's database: the
statement states the run's figures from the sampled report's signed claim, validates with
in-toto's own bindings and the page's JSON Schema, and every lie a collector could sign into it
is refused with its reason, after the report's own verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.store.factory import open_store
from flopwatch.intoto.sampled_predicate import COMPUTE_USAGE_SAMPLED_V1
from flopwatch.runs import WorkloadClass
from flopwatch.verify.intoto_sampled import SAMPLED_INTOTO_STEPS
from flopwatch.verify.sampled_format import detectable_fraction
from tests.cli.test_report_intoto_lineage import chain  # noqa: F401  (a fixture)
from tests.cli.test_report_verify_cmd import filled_db, key_id
from tests.intoto.statements import payload_of, resigned
from tests.intoto.test_sampled_predicate import schema_errors
from tests.intoto.test_statement import in_toto_validate
from tests.nodes import Node

K = ["--samples", "20", "--probes", "20"]
MIN = ["--min-samples", "20", "--min-probes", "20"]


def _cli(capsys, *args: str) -> str:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.err + out.out
    return out.out


@pytest.fixture
def run_report(tmp_path, capsys):
    """A run of two jobs on two nodes (one of them pretraining on two GPUs), and another job's
    records in between; its sampled report and statement."""
    a = Node("a", job="slurm:c/1", run="llama", account="acme", gpus=2)
    a.labels["workload_class"] = WorkloadClass.PRETRAINING
    b = Node("b", job="slurm:c/2", run="llama", account="acme")
    c = Node("c", job="slurm:c/3")
    db, _ = filled_db(tmp_path, [a, b, c], each=4)
    out = tmp_path / "llama.sampled"
    args = ["report", "--run", "llama", "--account", "acme", "--db", db, "--out", str(out)]
    printed = _cli(capsys, *args, "--sampled", *K, "--format", "in-toto")
    assert f"--in-toto {out}.intoto.json" in printed
    return db, out, Path(f"{out}.intoto.json")


def _verify(capsys, db: str, report: Path, statement: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    trust = ["--collector-key", key_id(db), *MIN]
    code = main(["verify", str(report), *trust, "--in-toto", str(statement), *extra])
    return code, capsys.readouterr().out


def test_a_runs_statement_states_its_sampled_claim_and_verifies(run_report, capsys):
    db, report, statement = run_report
    payload = payload_of(statement.read_bytes())
    in_toto_validate(payload)
    assert payload["predicateType"] == COMPUTE_USAGE_SAMPLED_V1
    predicate = payload["predicate"]
    assert schema_errors(predicate) == []
    store = open_store(db)  # what ListRuns (`flopwatch runs`) serves
    try:
        [run] = store.run_page("acme", "llama", ("", ""), 1)
    finally:
        store.close()
    assert (predicate["scope"], predicate["run"], predicate["account"]) == ("run", "llama", "acme")
    assert "job" not in predicate
    assert predicate["operations"] == {
        "estimate": str(run.flops_estimate),
        "upperBound": str(run.flops_upper),
    }
    assert predicate["gpuIntervals"] == run.gpu_intervals == 12
    assert predicate["records"] == 8 and predicate["logWindow"] == {"firstLeaf": 0, "lastLeaf": 10}
    assert predicate["workloadClasses"] == ["pretraining", "unknown"]
    assert predicate["methods"] == ["gpm"]
    assert predicate["window"] == {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T08:00:04Z"}
    evidence = predicate["evidence"]
    assert evidence["report"]["name"] == "llama.sampled"
    assert payload["subject"] == [{"name": "llama.sampled", "digest": evidence["report"]["digest"]}]
    assert (evidence["samples"], evidence["probes"], evidence["challenge"]) == (20, 20, "")
    assert evidence["guarantee"] == {
        "confidence": 0.95,
        "misstatedFraction": detectable_fraction(20),
        "withheldFraction": detectable_fraction(20),
    }

    code, out = _verify(capsys, db, report, statement)
    assert code == 0, out
    assert out.count("[ok]   in-toto") == len(SAMPLED_INTOTO_STEPS) == 8
    assert "VERIFIED (sampled)" in out and "llama.sampled (sha256:" in out
    code, out = _verify(capsys, db, report, statement, "--json")
    summary = json.loads(out)
    assert summary["in_toto"]["report_is_subject"] is True
    assert summary["in_toto"]["predicate"] == predicate


def test_a_job_sampled_statement_and_a_customer_subject(tmp_path, capsys):
    a = Node("a", job="slurm:c/1", run="llama", account="acme")
    db, _ = filled_db(tmp_path, [a, Node("b", job="other")], each=5)
    out = tmp_path / "j.sampled"
    weights = "model.safetensors.index.json=sha256:" + "ab" * 32
    _cli(
        capsys,
        *("report", a.job, "--db", db, "--out", str(out), "--sampled", *K),
        *("--format", "in-toto", "--in-toto-out", str(tmp_path / "j.json")),
        *("--subject", weights, "--challenge", "5f1e"),
    )
    payload = payload_of((tmp_path / "j.json").read_bytes())
    in_toto_validate(payload)
    predicate = payload["predicate"]
    assert schema_errors(predicate) == []
    assert (predicate["scope"], predicate["job"], predicate["run"]) == ("job", a.job, "llama")
    assert predicate["evidence"]["challenge"] == "5f1e"
    assert [s["name"] for s in payload["subject"]] == ["model.safetensors.index.json"]
    code, printed = _verify(capsys, db, out, tmp_path / "j.json", "--challenge", "5f1e")
    assert code == 0, printed
    assert "(named by the operator: not checked)" in printed


def test_a_derived_runs_statement_states_and_proves_its_ancestors(chain, capsys):  # noqa: F811
    db, _, _, _, tmp = chain
    out = tmp / "ft.sampled"
    args = ["report", "--run", "ft", "--account", "acme", "--db", db, "--out", str(out)]
    _cli(capsys, *args, "--sampled", *K, "--format", "in-toto")
    statement = Path(f"{out}.intoto.json")
    lineage = payload_of(statement.read_bytes())["predicate"]["lineage"]
    assert [(x["account"], x["run"], x["workloadClass"]) for x in lineage] == [
        ("acme", "base", "pretraining"),
        ("acme", "pre", "pretraining"),
    ]
    code, printed = _verify(capsys, db, out, statement)
    assert code == 0, printed
    assert "2 ancestor(s), each declaration in the log" in printed


def _lie(path: str, value: Any):
    def edit(o: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        obj = o["predicate"]
        for p in parents:
            obj = obj[p]
        obj[last] = value

    return edit


LIES = [
    ("operations.upperBound", "1", 6, "statement_mismatch", "operations (upper bound)"),
    ("operations.estimate", "0", 6, "statement_mismatch", "operations (estimate)"),
    ("gpuIntervals", 11, 6, "statement_mismatch", "GPU intervals"),
    ("gpuNanoseconds", "1", 6, "statement_mismatch", "GPU nanoseconds"),
    ("records", 7, 6, "statement_mismatch", "records"),
    ("logWindow.lastLeaf", 9, 6, "statement_mismatch", "log window"),
    ("run", "llama-2", 6, "statement_mismatch", "run and account"),
    ("flopModelVersion", "2", 6, "statement_mismatch", "FLOP model version"),
    ("reportedAt", "2027-01-01T00:00:00Z", 6, "statement_mismatch", "reported at"),
    ("evidence.samples", 3000, 4, "statement_mismatch", "samples"),
    ("evidence.challenge", "5f1e", 4, "statement_mismatch", "challenge"),
    ("evidence.guarantee.misstatedFraction", 0.001, 4, "statement_mismatch", "guarantee"),
    ("evidence.guarantee.confidence", 0.99, 4, "statement_mismatch", "guarantee"),
    ("evidence.report.digest.sha256", "ab" * 32, 4, "wrong_report", "sha256:abab"),
    ("window.start", "2027-01-15T08:00:01Z", 7, "statement_mismatch", "outside the stated"),
    ("window.end", "2027-01-15T08:00:03Z", 7, "statement_mismatch", "outside the stated"),
    ("methods", ["nvml-utilization"], 7, "statement_mismatch", "not a stated method"),
    ("workloadClasses", ["unknown"], 7, "statement_mismatch", "not a stated one"),
    ("lineage", [], None, None, None),  # the truth: llama derives from no run
]


@pytest.mark.parametrize(
    "path,value,step,reason,message", LIES, ids=[f"{x[0]}={str(x[1])[:12]}" for x in LIES]
)
def test_a_statement_lying_about_a_verified_report_is_refused(
    run_report, capsys, path, value, step, reason, message
):
    # The collector key signs a statement whose figures are not the report's.
    db, report, statement = run_report
    key = load_collector_key(default_key_path(db), create=False)
    statement.write_bytes(resigned(statement.read_bytes(), _lie(path, value), key))
    code, out = _verify(capsys, db, report, statement)
    if step is None:
        assert code == 0, out
        return
    assert code == 1
    assert f"[FAIL] in-toto {step}." in out and message in out
    assert f"The report verified; the in-toto statement FAILED at step {step} ({reason})" in out
    code, out = _verify(capsys, db, report, statement, "--json")
    assert code == 1 and json.loads(out)["in_toto_step"] == step


def test_a_statement_signed_by_another_key_or_about_another_report(run_report, capsys, tmp_path):
    db, report, statement = run_report
    other = resigned(
        statement.read_bytes(),
        lambda o: None,
        load_collector_key(tmp_path / "other.pem", create=True),
    )
    (tmp_path / "other.json").write_bytes(other)
    code, out = _verify(capsys, db, report, tmp_path / "other.json")
    assert code == 1 and "bad_statement_signature" in out
    # A second report of the same run (a new claim, so other bytes): the first's statement is
    # not about it.
    again = tmp_path / "again.sampled"
    _cli(
        capsys,
        *("report", "--run", "llama", "--account", "acme", "--db", db, "--out", str(again)),
        *("--sampled", *K),
    )
    code, out = _verify(capsys, db, again, statement)
    assert code == 1 and "FAILED at step 4 (wrong_report)" in out


def test_the_reports_own_verification_runs_first(run_report, capsys):
    db, report, statement = run_report
    data = bytearray(report.read_bytes())
    data[-40] ^= 1  # inside the last opened record or probe
    report.write_bytes(bytes(data))
    code, out = _verify(capsys, db, report, statement)
    assert code == 1 and "in-toto" not in out and "do not rely on this report" in out


def test_statements_of_one_kind_are_refused_against_the_other(run_report, tmp_path, capsys):
    db, report, statement = run_report
    a = Node("a", job="slurm:c/1", run="llama", account="acme", gpus=2)
    bundle = tmp_path / "a.bundle"
    _cli(capsys, "report", a.job, "--db", db, "--out", str(bundle), "--format", "in-toto")
    # A bundle's statement against the sampled report, and the report's against the bundle.
    code, out = _verify(capsys, db, report, Path(f"{bundle}.intoto.json"))
    assert code == 1 and "FAILED at step 3 (malformed_statement)" in out
    assert "compute-usage-sampled/v1" in out
    capsys.readouterr()
    args = ["verify", str(bundle), "--collector-key", key_id(db), "--in-toto", str(statement)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED at step 3 (malformed_statement)" in out and "compute-usage/v1" in out


def test_the_statement_can_go_to_standard_output(run_report, capsys, tmp_path):
    db, _, _ = run_report
    out = tmp_path / "x.sampled"
    capsys.readouterr()
    args = ["report", "--run", "llama", "--account", "acme", "--db", db, "--out", str(out)]
    assert main([*args, "--sampled", *K, "--format", "in-toto", "--in-toto-out", "-"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["payloadType"] == "application/vnd.in-toto+json"
    assert "wrote" in printed.err  # the summary goes to standard error then


def test_bad_options_are_refused_before_any_work(run_report, capsys, tmp_path):
    db, _, _ = run_report
    out = tmp_path / "y.sampled"
    base = ["report", "--run", "llama", "--account", "acme", "--db", db, "--out", str(out)]
    assert main([*base, "--sampled", "--subject", "w=sha256:" + "ab" * 32]) == 2
    assert main([*base, "--sampled", "--format", "in-toto", "--subject", "w=md5:ab"]) == 2
    assert main([*base, "--sampled", "--format", "in-toto", "--log-origin", "bad origin"]) == 2
    assert main([*base, "--sampled", "--format", "in-toto", "--archive", "x"]) == 2
    assert not out.exists() and not Path(f"{out}.intoto.json").exists()


def test_a_run_whose_parent_is_on_another_collector_states_its_claim(chain, capsys):  # noqa: F811
    _, _, b_db, _, tmp = chain
    out = tmp / "d.sampled"
    args = ["report", "--run", "distilled", "--account", "beta", "--db", b_db, "--out", str(out)]
    _cli(capsys, *args, "--sampled", *K, "--format", "in-toto")
    statement = Path(f"{out}.intoto.json")
    [link] = payload_of(statement.read_bytes())["predicate"]["lineage"]
    assert (link["account"], link["run"]) == ("acme", "ft")
    assert int(link["parentClaim"]["cumulativeOperations"]["upperBound"]) > 0
    code, printed = _verify(capsys, b_db, out, statement)
    assert code == 0, printed
    # A collector that re-signs the statement with a larger parent claim is caught (step 8).
    key = load_collector_key(default_key_path(b_db), create=False)
    more = _lie(
        "lineage",
        [
            link
            | {
                "parentClaim": link["parentClaim"]
                | {"cumulativeOperations": {"estimate": "1", "upperBound": "1"}}
            }
        ],
    )
    statement.write_bytes(resigned(statement.read_bytes(), more, key))
    code, printed = _verify(capsys, b_db, out, statement)
    assert code == 1 and "FAILED at step 8 (bad_lineage)" in printed
