"""`flopwatch report --format in-toto` and `flopwatch verify --in-toto`, through the command line
against a collector's database."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from flopwatch.collector.log.key import default_key_path, load_collector_key
from tests.cli.test_report_verify_cmd import filled_db, key_id
from tests.intoto.statements import payload_of, resigned
from tests.nodes import Node

WEIGHTS = "sha256:" + "ab" * 32


@pytest.fixture
def made(tmp_path, capsys):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    out = tmp_path / "a.bundle"
    code = main(["report", node.job, "--db", db, "--out", str(out), "--format", "in-toto"])
    assert code == 0
    printed = capsys.readouterr().out
    return db, out, Path(f"{out}.intoto.json"), printed


def test_report_writes_a_statement_beside_the_bundle_and_verify_checks_it(made, capsys):
    db, out, statement, printed = made
    assert f"--in-toto {statement}" in printed
    predicate = payload_of(statement.read_bytes())["predicate"]
    assert predicate["checkpoint"].startswith(f"flopwatch.invalid/log-{key_id(db)[:16]}\n")
    assert (
        main(["verify", str(out), "--collector-key", key_id(db), "--in-toto", str(statement)]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("[ok]   in-toto") == 7 and "[FAIL]" not in printed
    assert "states the same figures" in printed and "a.bundle (sha256:" in printed
    args = ["verify", str(out), "--collector-key", key_id(db), "--in-toto", str(statement)]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["in_toto"]["verified"] is True
    assert summary["in_toto"]["predicate"]["operations"]["estimate"] == str(summary["flops"])
    assert summary["in_toto"]["bundle_is_subject"] is True


def test_a_tampered_statement_fails_verify_but_not_the_bundle(made, capsys):
    db, out, statement, _ = made
    env = json.loads(statement.read_bytes())
    payload = base64.b64decode(env["payload"]).replace(b'"records":3', b'"records":2')
    env["payload"] = base64.b64encode(payload).decode()
    statement.write_text(json.dumps(env))
    assert (
        main(["verify", str(out), "--collector-key", key_id(db), "--in-toto", str(statement)]) == 1
    )
    printed = capsys.readouterr().out
    assert "[FAIL] in-toto 2." in printed and "The bundle verified" in printed
    args = [
        "verify",
        str(out),
        "--collector-key",
        key_id(db),
        "--in-toto",
        str(statement),
        "--json",
    ]
    assert main(args) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "bad_statement_signature"


def test_subjects_and_origin_and_a_named_statement_file(tmp_path, capsys):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    out, statement = tmp_path / "a.bundle", tmp_path / "weights.json"
    args = ["report", node.job, "--db", db, "--out", str(out), "--format", "in-toto"]
    args += ["--subject", f"model.index.json={WEIGHTS}", "--subject", f"tokenizer={WEIGHTS}"]
    args += ["--in-toto-out", str(statement), "--log-origin", "collector.example.org/fw"]
    assert main(args) == 0
    capsys.readouterr()
    payload = payload_of(statement.read_bytes())
    assert [s["name"] for s in payload["subject"]] == ["model.index.json", "tokenizer"]
    assert payload["predicate"]["checkpoint"].startswith("collector.example.org/fw\n")
    assert (
        main(["verify", str(out), "--collector-key", key_id(db), "--in-toto", str(statement)]) == 0
    )
    assert "named by the operator: not checked" in capsys.readouterr().out


def test_the_statement_can_go_to_standard_output(tmp_path, capsys):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    out = tmp_path / "a.bundle"
    args = ["report", node.job, "--db", db, "--out", str(out), "--format", "in-toto"]
    assert main([*args, "--in-toto-out", "-"]) == 0
    captured = capsys.readouterr()
    assert payload_of(captured.out.encode())["subject"][0]["name"] == "a.bundle"
    assert "verify with" in captured.err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--subject", f"w={WEIGHTS}"], "need --format in-toto"),
        (["--log-origin", "x.example/log"], "need --format in-toto"),
        (["--format", "in-toto", "--subject", "w=md5:00"], "NAME=sha256:HEX"),
        (["--format", "in-toto", "--log-origin", "bad origin\n"], "--log-origin"),
        (["--format", "in-toto", "--in-toto-out", "OUT"], "the bundle's own file"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, extra, message):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    out = tmp_path / "a.bundle"
    extra = [str(out) if x == "OUT" else x for x in extra]
    assert main(["report", node.job, "--db", db, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not Path(f"{out}.intoto.json").exists()


def test_with_the_bundle_on_standard_output_the_statement_needs_a_file(tmp_path, capsys):
    node = Node("a")
    db, _ = filled_db(tmp_path, [node])
    assert main(["report", node.job, "--db", db, "--out", "-", "--format", "in-toto"]) == 2
    assert "--in-toto-out" in capsys.readouterr().err


def test_an_existing_statement_file_is_kept_without_force(made, capsys):
    db, out, statement, _ = made
    before = statement.read_bytes()
    node = Node("a")
    args = ["report", node.job, "--db", db, "--out", str(tmp := out.with_suffix(".b2"))]
    args += ["--format", "in-toto", "--in-toto-out", str(statement)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert statement.read_bytes() == before and not tmp.exists()


def test_a_statement_lying_about_a_verified_bundle_fails(made, capsys):
    # The collector key signs a statement whose figures are not the bundle's.
    db, out, statement, _ = made
    key = load_collector_key(default_key_path(db), create=False)
    lie = resigned(
        statement.read_bytes(),
        lambda o: o["predicate"]["operations"].update(upperBound="1"),
        key,
    )
    statement.write_bytes(lie)
    assert (
        main(["verify", str(out), "--collector-key", key_id(db), "--in-toto", str(statement)]) == 1
    )
    assert "statement_mismatch" in capsys.readouterr().out
