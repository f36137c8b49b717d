"""`flopwatch jobs` against a running collector: table, JSON, one job's nodes and GPUs, and
paging through more jobs than one gRPC message could hold."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from flopwatch.cli.main import main
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.nodes import expected_runs, expected_totals


def cli(port: int, *args: str, command: str | None = "jobs") -> list[str]:
    """`flopwatch COMMAND --collector ... ARGS` (command None: `args` start with the command)."""
    if command is None:
        command, *rest = args
    else:
        rest = list(args)
    return [command, "--collector", f"127.0.0.1:{port}", "--insecure", *rest]


def serve_and_ask(
    db: Path, asks: Sequence[Sequence[str]], capsys, setup=None, command: str | None = "jobs"
) -> list[tuple[int, str, str]]:
    """Start a collector on `db`, run `setup(channel)`, then each CLI call in a thread
    (`flopwatch COMMAND ASK...`; command None: each ask starts with its command)."""

    async def scenario():
        service = CollectorService(config(db, metrics_listen=None))
        port, _ = await service.start()
        try:
            if setup is not None:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    await setup(channel)
            out = []
            for ask in asks:
                capsys.readouterr()
                code = await asyncio.to_thread(main, cli(port, *ask, command=command))
                captured = capsys.readouterr()
                out.append((code, captured.out, captured.err))
            return out
        finally:
            await service.stop()

    return run(scenario())


def test_jobs_table_json_and_one_jobs_breakdown(tmp_path, capsys):
    db = tmp_path / "c.db"
    a, b = past_node("node-a", gpus=2, job="slurm:c/7"), past_node("node-b", job="slurm:c/7")
    enroll(db, a, b)
    envs = a.envelopes(3) + b.envelopes(2)
    other = a.envelope(job="slurm:c/8")

    async def setup(channel):
        await submit(channel, [*envs[:3], other])
        await submit(channel, envs[3:])

    (code, table, _), (_, as_json, _), (_, one, _), (_, one_json, _), (bad, _, err) = serve_and_ask(
        db,
        [[], ["--json"], ["--job", "slurm:c/7"], ["--job", "slurm:c/7", "--json"], ["--job", "x"]],
        capsys,
        setup,
    )
    assert code == 0
    totals = expected_totals([a, b], [*envs, other])
    header = table.splitlines()[0]
    for column in (
        "JOB",
        "FLOPs (estimate)",
        "FLOPs (upper bound)",
        "GPU-seconds",
        "GPU energy (kWh)",
        "GPU-intervals",
        "from",
    ):
        assert column in header
    assert f"{totals['slurm:c/7'][0]:.4e}" in table
    assert "FLOP model v1; times in UTC; alerts fire on the upper bound." in table

    doc = json.loads(as_json)
    assert doc["jobs"] == {
        job: {"flops": e, "flops_upper": u} for job, (e, u) in totals.items()
    }  # the shape `flopwatch replay` prints
    assert doc["details"]["slurm:c/7"]["gpu_intervals"] == 3 * 2 + 2
    # Each node's readings: 1 s and 700 J per GPU and record, all the job's.
    [(_, (*_, fs, nj))] = [
        (k, v) for k, v in expected_runs([a, b], envs).items() if k[1] == "slurm:c/7"
    ]
    assert doc["details"]["slurm:c/7"]["gpu_seconds"] == fs / 1e15 == 8.0
    assert doc["details"]["slurm:c/7"]["energy_kwh"] == nj / 3.6e15 == 8 * 700 / 3.6e6
    assert "board energy" in doc["legend"]["energy_kwh"]
    assert doc["flop_model_version"] == "1" and "estimate" in doc["legend"]["flops"]

    assert "job slurm:c/7" in one
    assert f"FLOPs (upper bound):  {totals['slurm:c/7'][1]:.4e}" in one
    assert "node-a  2" in one and "node-b  1" in one  # per node: GPUs
    assert all(g.uuid in one for g in a.gpus + b.gpus)

    detail = json.loads(one_json)
    assert detail["job"]["id"] == "slurm:c/7"
    assert detail["job"]["flops_upper"] == totals["slurm:c/7"][1]
    nodes = detail["nodes"]
    assert set(nodes) == {"node-a", "node-b"}
    assert set(nodes["node-a"]["gpus"]) == {g.uuid for g in a.gpus}
    assert sum(n["flops"] for n in nodes.values()) == totals["slurm:c/7"][0]
    assert expected_totals([b], envs[3:])["slurm:c/7"][1] == nodes["node-b"]["flops_upper"]

    assert bad == 2 and "no record of job 'x'" in err


def test_jobs_pages_through_more_than_one_message_holds(tmp_path, capsys):
    """3,000 jobs with 256-character ids (~2.3 MB of ids, over the 1 MiB gRPC limit)."""
    db = tmp_path / "c.db"
    SQLiteStore(db).close()
    ids = [f"{i:06d}" + "€" * 250 for i in range(3000)]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO job_totals (job_id, flops_estimate, flops_upper, first_start_ns, "
            "last_end_ns, gpu_intervals) VALUES (?, ?, ?, ?, ?, ?)",
            [(j, str(10**24 + i), str(10**25 + i), 1, 2, 1) for i, j in enumerate(ids)],
        )
    [(code, out, err), (code2, out2, _)] = serve_and_ask(
        db, [["--json"], ["--json", "--page-size", "7", "--prefix", "00001"]], capsys
    )
    assert code == 0, err
    jobs = json.loads(out)["jobs"]
    assert list(jobs) == ids
    assert jobs[ids[2999]] == {"flops": 10**24 + 2999, "flops_upper": 10**25 + 2999}
    assert code2 == 0
    assert list(json.loads(out2)["jobs"]) == [j for j in ids if j.startswith("00001")]


@pytest.mark.parametrize("args", [["--page-size", "-1"]])
def test_jobs_refuses_bad_arguments(args, capsys):
    assert main(cli(1, *args)) == 2
    assert "--page-size" in capsys.readouterr().err
