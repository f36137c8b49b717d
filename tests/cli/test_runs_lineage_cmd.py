"""`flopwatch runs declare|claim|lineage` against collectors' databases, and `flopwatch runs`
showing the lineage: a fine-tune declared derived from its pretraining run, refusals with the
reason (cycle, unknown parent, tampered claim), a run of another collector inherited through its
signed claim, cumulative compute in the table and the JSON."""

from __future__ import annotations

import json

from flopwatch.cli.main import main
from flopwatch.collector.store.factory import open_store
from flopwatch.dsse import Envelope
from flopwatch.v1 import envelope_pb2
from tests.cli.test_jobs_cmd import serve_and_ask
from tests.cli.test_runs_cmd import fleet  # noqa: F401 (fixture)
from tests.collector.server_helpers import enroll, submit


def flopwatch(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_declare_claim_and_show_lineage(tmp_path, capsys, fleet):  # noqa: F811
    nodes, envs = fleet
    db = tmp_path / "a.db"
    enroll(db, *nodes)

    async def setup(channel):
        await submit(channel, envs)

    [(code, before, _)] = serve_and_ask(db, [["runs", "--json"]], capsys, setup, command=None)
    assert code == 0
    own = {r["run"]: r for r in json.loads(before)["runs"]}
    a = ["--db", f"sqlite:{db}", "--account", "acme"]

    code, out, err = flopwatch(
        capsys,
        "runs",
        "declare",
        "llama-ft",
        "--derived-from",
        "llama",
        "--class",
        "fine-tuning",
        *a,
    )
    assert code == 0, err
    assert "declared: leaf" in out and "derives from 'llama'" in out
    assert "declared by the operator, leaf" in out
    # Refused, with the reason; nothing is kept.
    code, _, err = flopwatch(
        capsys,
        "runs",
        "declare",
        "llama",
        "--derived-from",
        "llama-ft",
        "--class",
        "pretraining",
        *a,
    )
    assert code == 1 and "REFUSED: cycle" in err
    code, _, err = flopwatch(
        capsys, "runs", "declare", "x", "--derived-from", "nope", "--class", "fine-tuning", *a
    )
    assert code == 1 and "REFUSED: unknown parent" in err

    # The run table and JSON show the lineage and the cumulative compute.
    [(_, table, _), (_, listed, _)] = serve_and_ask(
        db, [["runs"], ["runs", "--json"]], capsys, command=None
    )
    assert "DERIVED FROM" in table.splitlines()[0] and "acme/llama" in table
    runs = {r["run"]: r for r in json.loads(listed)["runs"]}
    tune = runs["llama-ft"]
    assert tune["parent"] == {"account": "acme", "run": "llama", "collector": None}
    assert tune["inherited_flops"] == own["llama"]["flops"]
    assert tune["cumulative_flops"] == own["llama"]["flops"] + own["llama-ft"]["flops"]
    assert tune["derived_over_third"] is (3 * own["llama-ft"]["flops"] > own["llama"]["flops"])
    assert runs["llama"]["parent"] is None
    assert runs["llama"]["cumulative_flops"] == own["llama"]["flops"]

    # Collector A's signed claim of llama-ft, imported by collector B.
    claim = tmp_path / "llama-ft.claim"
    code, _, err = flopwatch(capsys, "runs", "claim", "llama-ft", "--out", str(claim), *a)
    assert code == 0, err
    code, pem, _ = flopwatch(capsys, "log", "key", "--public", "--db", f"sqlite:{db}")
    (tmp_path / "a.pub.pem").write_text(pem)
    b_db = tmp_path / "b.db"
    open_store(f"sqlite:{b_db}", create=True).close()
    b = ["--db", f"sqlite:{b_db}", "--account", "beta", "--class", "fine-tuning"]
    foreign = ["--claim-key", str(tmp_path / "a.pub.pem")]

    # Tampered: refused.
    msg = envelope_pb2.Envelope()
    msg.ParseFromString(claim.read_bytes())
    msg.payload = msg.payload.replace(b'"flops_estimate":"', b'"flops_estimate":"1')
    tampered = tmp_path / "tampered.claim"
    tampered.write_bytes(msg.SerializeToString())
    code, _, err = flopwatch(
        capsys, "runs", "declare", "distilled", "--parent-claim", str(tampered), *foreign, *b
    )
    assert code == 1 and "REFUSED (bad_run_claim)" in err

    code, _, err = flopwatch(
        capsys, "runs", "declare", "distilled", "--parent-claim", str(claim), *foreign, *b
    )
    assert code == 0, err
    code, out, _ = flopwatch(
        capsys,
        "runs",
        "lineage",
        "distilled",
        "--json",
        "--db",
        f"sqlite:{b_db}",
        "--account",
        "beta",
    )
    view = json.loads(out)
    assert view["ancestors"] == [{"account": "acme", "run": "llama-ft"}]
    assert view["declared_by"]["by"] == "operator" and view["declared_by"]["record_key_id"] is None
    assert view["inherited"]["flops"] == tune["cumulative_flops"]
    assert (
        view["foreign_parent_collector"] == Envelope.from_bytes(claim.read_bytes()).signatures[0][0]
    )
