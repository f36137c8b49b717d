"""The in-toto predicate's lineage (`flopwatch report --format in-toto`): a job of a run derived
through two declarations, and one whose parent is a run of another collector, state their
ancestors with each declaration's log leaf and inclusion proof; `flopwatch verify --in-toto`
checks every link offline (step 7), the statement validates with in-toto's own bindings and the
page's JSON Schema, and a collector that re-signs a statement with a changed lineage is caught."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.errors import StatementVerificationError
from flopwatch.runs import WorkloadClass
from flopwatch.verify.bundle import BundleVerifier
from flopwatch.verify.intoto import INTOTO_STEPS, StatementVerifier
from tests.cli.test_report_verify_cmd import filled_db, key_id
from tests.intoto.statements import payload_of, resigned
from tests.intoto.test_predicate_schema import schema_errors
from tests.intoto.test_statement import in_toto_validate
from tests.nodes import Node


def _node(name: str, run: str, account: str, kind: WorkloadClass) -> Node:
    n = Node(name, job=f"slurm:c/{name}", run=run, account=account)
    n.labels["workload_class"] = kind
    return n


def _cli(capsys, *args: str) -> str:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _report(capsys, db: str, job: str, out: Path) -> tuple[bytes, bytes]:
    _cli(capsys, "report", job, "--db", db, "--out", str(out), "--format", "in-toto")
    return out.read_bytes(), Path(f"{out}.intoto.json").read_bytes()


@pytest.fixture
def chain(tmp_path, capsys):
    """Collector A: runs pre <- base <- ft of account acme; collector B: run distilled of
    account beta, derived from A's run ft through A's signed run claim."""
    a = tmp_path / "a"
    a.mkdir()
    pre = _node("p", "pre", "acme", WorkloadClass.PRETRAINING)
    base = _node("b", "base", "acme", WorkloadClass.PRETRAINING)
    ft = _node("f", "ft", "acme", WorkloadClass.FINE_TUNING)
    db, _ = filled_db(a, [pre, base, ft])
    acme = ["--db", db, "--account", "acme"]
    _cli(
        capsys, "runs", "declare", "base", "--derived-from", "pre", "--class", "pretraining", *acme
    )
    _cli(capsys, "runs", "declare", "ft", "--derived-from", "base", "--class", "fine-tuning", *acme)
    claim = tmp_path / "ft.claim"
    _cli(capsys, "runs", "claim", "ft", "--out", str(claim), *acme)
    (tmp_path / "a.pub.pem").write_text(_cli(capsys, "log", "key", "--public", "--db", db))
    b = tmp_path / "b"
    b.mkdir()
    distilled = _node("d", "distilled", "beta", WorkloadClass.FINE_TUNING)
    b_db, _ = filled_db(b, [distilled])
    _cli(
        capsys,
        *("runs", "declare", "distilled", "--parent-claim", str(claim)),
        *("--claim-key", str(tmp_path / "a.pub.pem"), "--class", "fine-tuning"),
        *("--db", b_db, "--account", "beta"),
    )
    return db, ft, b_db, distilled, tmp_path


def _verify(db: str, bundle: bytes, statement: bytes) -> Any:
    report = BundleVerifier(collector_key_id=key_id(db)).verify(bundle)
    return StatementVerifier().verify(statement, bundle_data=bundle, report=report)


def test_a_derived_runs_statement_states_and_proves_its_ancestors(chain, capsys):
    db, ft, _, _, tmp = chain
    bundle, statement = _report(capsys, db, ft.job, tmp / "ft.bundle")
    predicate = payload_of(statement)["predicate"]
    lineage = predicate["lineage"]
    assert [(x["account"], x["run"], x["workloadClass"]) for x in lineage] == [
        ("acme", "base", "pretraining"),
        ("acme", "pre", "pretraining"),
    ]
    assert all("parentClaim" not in x for x in lineage)
    assert lineage[0]["declaration"]["leafIndex"] > lineage[1]["declaration"]["leafIndex"]
    assert schema_errors(predicate) == []
    in_toto_validate(payload_of(statement))
    verified = _verify(db, bundle, statement)
    assert [x.run for x in verified.usage.lineage] == ["base", "pre"]
    # Through the command line: seven steps, the seventh the lineage.
    out = _cli(
        capsys,
        *("verify", str(tmp / "ft.bundle"), "--collector-key", key_id(db)),
        *("--in-toto", f"{tmp / 'ft.bundle'}.intoto.json"),
    )
    assert out.count("[ok]   in-toto") == len(INTOTO_STEPS) == 7
    assert "2 ancestor(s), each declaration in the log" in out


def test_a_parent_on_another_collector_is_stated_with_its_claim(chain, capsys):
    db, _, b_db, distilled, tmp = chain
    bundle, statement = _report(capsys, b_db, distilled.job, tmp / "d.bundle")
    [link] = payload_of(statement)["predicate"]["lineage"]
    assert (link["account"], link["run"], link["workloadClass"]) == ("acme", "ft", "unknown")
    claim = (tmp / "ft.claim").read_bytes()
    assert link["parentClaim"]["digest"]["sha256"] == hashlib.sha256(claim).hexdigest()
    assert link["parentClaim"]["collectorKeyId"] == key_id(db)
    assert int(link["parentClaim"]["cumulativeOperations"]["estimate"]) > 0
    assert schema_errors(payload_of(statement)["predicate"]) == []
    in_toto_validate(payload_of(statement))
    _verify(b_db, bundle, statement)


def _lying(db: str, statement: bytes, edit) -> bytes:
    key = load_collector_key(default_key_path(db), create=False)
    return resigned(statement, lambda obj: edit(obj["predicate"]["lineage"]), key)


def _swap(lineage: list[dict[str, Any]]) -> None:
    a, b = lineage[0]["declaration"], lineage[1]["declaration"]
    lineage[0]["declaration"], lineage[1]["declaration"] = b, a


def _set(field: str, value: Any):
    def edit(lineage: list[dict[str, Any]]) -> None:
        lineage[0][field] = value

    return edit


def _declared(field: str, value: Any):
    def edit(lineage: list[dict[str, Any]]) -> None:
        lineage[0]["declaration"][field] = value

    return edit


LIES = [
    (_set("run", "pre"), "names another parent"),
    (_set("account", "other"), "names another parent"),
    (_swap, "the declaration is of run"),
    (_declared("leafIndex", 0), "proof|root"),
    (_declared("leafHash", "00" * 32), "the leaf hash is not the declaration's"),
    (lambda lineage: lineage.reverse(), "the declaration is of run"),
    (lambda lineage: lineage[0].update(copy.deepcopy(lineage[1])), "the declaration is of run"),
]


@pytest.mark.parametrize(("edit", "why"), LIES)
def test_a_changed_lineage_is_refused_at_step_7(chain, capsys, edit, why):
    db, ft, _, _, tmp = chain
    bundle, statement = _report(capsys, db, ft.job, tmp / "ft.bundle")
    with pytest.raises(StatementVerificationError) as e:
        _verify(db, bundle, _lying(db, statement, edit))
    assert (e.value.step, e.value.reason) == (7, "bad_lineage")
    assert re.search(why, e.value.message), e.value.message


def test_a_changed_foreign_claim_is_refused(chain, capsys):
    _, _, b_db, distilled, tmp = chain
    bundle, statement = _report(capsys, b_db, distilled.job, tmp / "d.bundle")

    def more(lineage: list[dict[str, Any]]) -> None:
        ops = lineage[0]["parentClaim"]["cumulativeOperations"]
        ops["upperBound"] = str(int(ops["upperBound"]) + 1)

    def dropped(lineage: list[dict[str, Any]]) -> None:
        del lineage[0]["parentClaim"]

    for edit, why in [(more, "not the claim's"), (dropped, "without its claim")]:
        with pytest.raises(StatementVerificationError) as e:
            _verify(b_db, bundle, _lying(b_db, statement, edit))
        assert (e.value.step, e.value.reason) == (7, "bad_lineage")
        assert why in e.value.message


def test_a_run_of_no_lineage_states_none(tmp_path, capsys):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    bundle, statement = _report(capsys, db, node.job, tmp_path / "a.bundle")
    assert payload_of(statement)["predicate"]["lineage"] == []
    assert json.loads(statement)  # JSON
    _verify(db, bundle, statement)
