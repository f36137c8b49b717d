"""Evidence for regulators, end to end through the command line: `flopwatch report`, `verify`,
`log tree-head` and `log consistency`, against a collector's database and a running collector."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from flopwatch.cli.main import main
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import public_pem
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.statements import SignedTreeHead
from flopwatch.transport import ingest_stub, log_stub
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import envelope_pb2
from tests.nodes import NOW, Node, S, expected_totals
from tests.paths import TAMPER

STEP_COUNT = 12


def filled_db(tmp_path: Path, nodes: Sequence[Node], each: int = 3) -> tuple[str, list[bytes]]:
    """A collector database holding `each` records of every node, and its collector key."""
    db = tmp_path / "collector.db"
    store = SQLiteStore(db, now_ns=lambda: NOW)
    for n in nodes:
        store.enroll(n.public_raw, n.node_id)
    envs = [n.envelope() for _ in range(each) for n in nodes]
    acks = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: NOW).ingest(envs)
    assert {a.status for a in acks} == {"accepted"}
    store.close()
    load_collector_key(default_key_path(f"sqlite:{db}"), create=True)
    return f"sqlite:{db}", envs


def key_id(db: str) -> str:
    return load_collector_key(default_key_path(db), create=False).key_id


def test_report_then_verify_offline(tmp_path, capsys):
    a, b = Node("a"), Node("b", job="other")
    db, envs = filled_db(tmp_path, [a, b])
    out = tmp_path / "a.bundle"
    assert main(["report", a.job, "--db", db, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"--collector-key {key_id(db)}" in printed and "3 envelopes" in printed

    assert main(["verify", str(out), "--collector-key", key_id(db)]) == 0
    printed = capsys.readouterr().out
    # Step 12 (consistency with a kept tree head) checks nothing without one: shown as such.
    assert printed.count("[ok]") == STEP_COUNT - 1 and "[FAIL]" not in printed
    assert f"[skip] {STEP_COUNT}. log is consistent" in printed
    assert "no tree head of yours given" in printed
    assert "VERIFIED: job 'slurm:c/1'" in printed
    estimate, upper = expected_totals([a, b], envs)[a.job]
    assert f"exactly {estimate})" in printed and f"exactly {upper})" in printed

    assert main(["verify", str(out), "--collector-key", key_id(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verified"] is True
    assert [s["step"] for s in summary["skipped_steps"]] == [STEP_COUNT]
    assert (summary["flops"], summary["flops_upper"]) == (estimate, upper)
    assert summary["nodes"][0]["sequences"] == [1, 3]


def test_verify_demands_a_trust_anchor_and_names_the_bundles_key(tmp_path, capsys):
    node = Node()
    db, _ = filled_db(tmp_path, [node])
    out = tmp_path / "x.bundle"
    assert main(["report", node.job, "--db", db, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no trust anchor" in err and key_id(db) in err
    assert main(["verify", str(out), "--collector-key", "not-a-key"]) == 2


@pytest.mark.parametrize(
    "attack,step,reason",
    [
        ("flipped-payload-byte", 6, "bad_signature"),
        ("removed-envelope", 5, "missing_envelope"),
        ("rewritten-log-history", 12, "bad_consistency_proof"),
    ],
)
def test_verify_fails_a_tampered_bundle_with_its_step_and_reason(capsys, attack, step, reason):
    code = main(
        [
            "verify",
            str(TAMPER / f"{attack}.bundle"),
            "--collector-key",
            str(TAMPER / "collector-key.pub.pem"),
            "--kept-tree-head",
            str(TAMPER / "kept-tree-head.th"),
        ]
    )
    assert code == 1
    printed = capsys.readouterr().out
    assert f"[FAIL] {step:2d}." in printed and f"FAILED at step {step} ({reason})" in printed
    assert printed.count("[ok]") == step - 1
    assert printed.count("(not checked)") == STEP_COUNT - step


def test_report_refuses_an_unknown_job_and_a_missing_key(tmp_path, capsys):
    node = Node()
    db, _ = filled_db(tmp_path, [node])
    out = str(tmp_path / "x.bundle")
    assert main(["report", "no-such-job", "--db", db, "--out", out]) == 2
    assert "no record of job 'no-such-job'" in capsys.readouterr().err
    assert main(["report", node.job, "--db", db, "--out", out, "--key", str(tmp_path / "k")]) == 3
    assert "no collector key" in capsys.readouterr().err
    assert not Path(out).exists()


# The spellings of `log tree-head`, `report --kept-tree-head` and `verify --kept-tree-head`, and
# the ones they replaced, which work for one more release and say so on stderr.
SPELLINGS = {
    "current": (["log", "tree-head"], "--kept-tree-head", "--kept-tree-head"),
    "deprecated": (["tree-head"], "--consistency-from", "--trusted-tree-head"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_tree_head_from_a_bundle_pins_the_next_report(tmp_path, capsys, spelling):
    tree_head, report_option, verify_option = SPELLINGS[spelling]
    node = Node()
    db, _ = filled_db(tmp_path, [node])
    first, kept = tmp_path / "first.bundle", tmp_path / "kept.th"
    assert main(["report", node.job, "--db", db, "--out", str(first)]) == 0
    assert main([*tree_head, "--bundle", str(first), "--out", str(kept)]) == 0
    out, err = capsys.readouterr()
    assert "tree size 3" in out
    printed_err = err
    # More records arrive; the next report proves the log grew from the head kept.
    store = SQLiteStore(Path(db.removeprefix("sqlite:")), now_ns=lambda: NOW)
    Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: NOW).ingest(
        node.envelopes(2)
    )
    store.close()
    second = tmp_path / "second.bundle"
    argv = ["report", node.job, "--db", db, "--out", str(second), report_option, str(kept)]
    assert main(argv) == 0
    assert main(["verify", str(second), verify_option, str(kept)]) == 0
    out, err = capsys.readouterr()
    assert "tree size 3 -> 5: the log only grew" in out
    printed_err += err
    deprecations = [line for line in printed_err.splitlines() if "is deprecated" in line]
    if spelling == "current":
        assert deprecations == []
    else:
        assert deprecations == [
            "flopwatch: `flopwatch tree-head` is deprecated and goes away in the next release; "
            "use `flopwatch log tree-head`",
            "flopwatch: --consistency-from is deprecated and goes away in the next release; "
            "use --kept-tree-head",
            "flopwatch: --trusted-tree-head is deprecated and goes away in the next release; "
            "use --kept-tree-head",
        ]


def test_verify_consistency_still_answers_under_its_old_name(capsys):
    kept = str(TAMPER / "kept-tree-head.th")
    # Equal sizes need no proof, so no collector is asked.
    argv = [kept, kept, "--collector", "127.0.0.1:1", "--insecure"]
    assert main(["log", "consistency", *argv]) == 0
    out, err = capsys.readouterr()
    assert "CONSISTENT" in out and "deprecated" not in err
    assert main(["verify-consistency", *argv]) == 0
    out, err = capsys.readouterr()
    assert "CONSISTENT" in out
    assert "`flopwatch verify-consistency` is deprecated" in err
    assert "use `flopwatch log consistency`" in err


# -- against a running collector ----------------------------------------------------------------
async def submit(channel: grpc.aio.Channel, envelopes: Sequence[bytes]) -> None:
    async def requests():
        for data in envelopes:
            yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))

    async for response in ingest_stub(channel).Submit(requests()):
        assert {a.status for a in response.acks} == {cpb.ACK_STATUS_ACCEPTED}


async def head_of_size(channel: grpc.aio.Channel, size: int) -> SignedTreeHead:
    """Poll GetTreeHead until the collector has signed a head of `size` (10 s deadline)."""
    stub = log_stub(channel)
    deadline = time.monotonic() + 10
    while True:
        resp = await stub.GetTreeHead(cpb.GetTreeHeadRequest())
        head = SignedTreeHead.from_envelope(Envelope.from_message(resp.tree_head))
        if head.head.size == size or time.monotonic() > deadline:
            assert head.head.size == size
            return head
        await asyncio.sleep(0.02)


def test_a_running_collector_serves_heads_proofs_and_consistency(tmp_path, capsys):
    node = Node("a", start_ns=time.time_ns() - 86400 * S)  # in the past of the real clock
    db = tmp_path / "c.db"
    store = SQLiteStore(db)
    store.enroll(node.public_raw, node.node_id)
    store.close()
    config = CollectorConfig(
        listen="127.0.0.1:0",
        db=f"sqlite:{db}",
        metrics_listen=None,
        insecure=True,
        tree_head_interval_s=0.02,
    )
    first, later = node.envelopes(3), node.envelopes(4)
    # The log: the node key's enrollment (logged when the collector starts), then the records.
    old_th, new_th = tmp_path / "old.th", tmp_path / "new.th"

    async def scenario() -> None:
        service = CollectorService(config)
        port, _ = await service.start()
        target = f"127.0.0.1:{port}"
        cli = ["--collector", target, "--insecure"]
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await submit(channel, first)
                await head_of_size(channel, 4)
                assert (
                    await asyncio.to_thread(main, ["log", "tree-head", *cli, "--out", str(old_th)])
                    == 0
                )
                await submit(channel, later)
                head = await head_of_size(channel, 8)
                assert (
                    await asyncio.to_thread(main, ["log", "tree-head", *cli, "--out", str(new_th)])
                    == 0
                )
                stub = log_stub(channel)
                by_record = cpb.GetInclusionProofRequest(
                    record=cpb.RecordRef(key_id=node.key_id, sequence=5)
                )
                proof = await stub.GetInclusionProof(by_record)
                assert (proof.leaf_index, proof.tree_size) == (5, 8)
                verify_inclusion(
                    leaf_index=5,
                    tree_size=8,
                    leaf_hash=leaf_hash(later[1]),
                    proof=list(proof.hashes),
                    root=head.head.root,
                )
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.GetInclusionProof(cpb.GetInclusionProofRequest(leaf_index=8))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.GetConsistencyProof(
                        cpb.GetConsistencyProofRequest(old_size=4, new_size=9)
                    )
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            argv = ["log", "consistency", str(old_th), str(new_th), *cli]
            assert await asyncio.to_thread(main, argv) == 0
            assert "CONSISTENT" in capsys.readouterr().out
            # A head for the same size with another root, signed with the real collector key
            # (a collector that rewrote its log): the proof the collector serves cannot match.
            key = load_collector_key(default_key_path(config.db), create=False)
            new = SignedTreeHead.from_bytes(new_th.read_bytes()).head
            forked = tmp_path / "forked.th"
            forked.write_bytes(replace(new, root=bytes(32)).sign(key).to_bytes())
            argv = ["log", "consistency", str(old_th), str(forked), *cli]
            assert await asyncio.to_thread(main, argv) == 1
            assert "INCONSISTENT (bad_consistency_proof)" in capsys.readouterr().out
            # A report straight from the database while the collector runs.
            out = tmp_path / "live.bundle"
            argv = ["report", node.job, "--db", config.db, "--out", str(out)]
            assert await asyncio.to_thread(main, argv) == 0
            argv = ["verify", str(out), "--kept-tree-head", str(old_th)]
            assert await asyncio.to_thread(main, argv) == 1  # no consistency proof asked for
            pem = tmp_path / "collector.pub.pem"
            pem.write_text(public_pem(key.public_key))
            assert (
                await asyncio.to_thread(main, ["verify", str(out), "--collector-key", str(pem)])
                == 0
            )
        finally:
            await service.stop()

    asyncio.run(scenario())
    # The last head, signed at shutdown, covers every record acked (and the enrollment).
    store = SQLiteStore(db)
    try:
        assert SignedTreeHead.from_bytes(store.latest_tree_head()).head.size == 8
    finally:
        store.close()


def test_tree_head_saves_nothing_it_cannot_trust(tmp_path, capsys):
    out = tmp_path / "th"
    forged = [
        "log",
        "tree-head",
        "--bundle",
        str(TAMPER / "forged-tree-head.bundle"),
        "--out",
        str(out),
    ]
    assert main(forged) == 1
    assert "NOT SAVED (bad_tree_head_signature)" in capsys.readouterr().err
    other_key = ["--collector-key", "ab" * 32]
    assert main(["log", "tree-head", "--bundle", str(TAMPER / "valid.bundle"), *other_key]) == 1
    assert "untrusted_collector_key" in capsys.readouterr().err
    assert not out.exists()
