"""Agent -> collector over real gRPC on loopback, both in-process, against the H100 recording."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from flopwatch.agent.backends.base import GpuInfo, GpuReading
from flopwatch.agent.backends.replay import ReplayBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.replay_report import replay
from flopwatch.agent.service import Agent
from flopwatch.certs import create_ca, issue, pair_paths, write_pair
from flopwatch.cli.main import main
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.server import CollectorService
from flopwatch.jobs_file import load_jobs
from flopwatch.transport import query_stub
from flopwatch.v1 import collector_pb2
from tests.paths import H100_TRACE

TRACE_DIR = H100_TRACE
TRACE, JOBS = TRACE_DIR / "trace.jsonl", TRACE_DIR / "jobs.json"


class GatedBackend:
    """A replay that pauses after `pause_after` intervals until `gate` is set."""

    def __init__(self, pause_after: int) -> None:
        self._inner = ReplayBackend(TRACE, speed=None)
        self._left = pause_after
        self.gate = threading.Event()
        self.exhausted = threading.Event()

    def gpus(self) -> Sequence[GpuInfo]:
        return self._inner.gpus()

    def next_readings(self) -> list[GpuReading] | None:
        if self._left == 0:
            self.gate.wait()
        self._left -= 1
        readings = self._inner.next_readings()
        if readings is None:
            self.exhausted.set()
        return readings

    def close(self) -> None:
        self._inner.close()


def collector_config(db: Path, listen: str = "127.0.0.1:0") -> CollectorConfig:
    return CollectorConfig(
        listen=listen,
        db=f"sqlite:{db}",
        metrics_listen="127.0.0.1:0",
        thresholds=(10**16,),
        insecure=True,
        enroll_on_first_use=True,
    )


def agent_config(state: Path, port: int) -> AgentConfig:
    return AgentConfig(
        collector=f"127.0.0.1:{port}",
        backend=f"replay:{TRACE}",
        state_dir=state,
        node_id="node-1",
        cluster="test",
        jobs_file=JOBS,
        replay_speed=None,
        insecure=True,
        drain_timeout_s=60,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )


def jobs_json(port: int, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["jobs", "--collector", f"127.0.0.1:{port}", "--insecure", "--json"]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)["jobs"]
    return out


def expected_totals() -> dict[str, object]:
    jobs: dict[str, object] = replay(TRACE, load_jobs(JOBS, source="replay")).to_json()["jobs"]  # type: ignore[assignment]
    # The agent names its node's unattributed job after cluster and node (flopwatch/job_ids.py);
    # the offline replay keeps the bare name.
    jobs["unattributed:test/node-1"] = jobs.pop("unattributed")
    return jobs


async def wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    """Poll a condition (not a guessed sleep): returns as soon as it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_collector_totals_equal_what_the_agent_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> dict[str, object]:
        service = CollectorService(collector_config(tmp_path / "c.db"))
        port, _ = await service.start()
        try:
            code = await asyncio.to_thread(Agent(agent_config(tmp_path / "a", port)).run)
            assert code == 0
            return await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            await service.stop()

    assert asyncio.run(scenario()) == expected_totals()


def test_collector_restart_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.db"
    backend = GatedBackend(pause_after=40)

    async def scenario() -> dict[str, object]:
        first = CollectorService(collector_config(db))
        port, _ = await first.start()
        agent = Agent(agent_config(tmp_path / "a", port), backend=backend)
        run = asyncio.create_task(asyncio.to_thread(agent.run))

        def accepted(service: CollectorService) -> float:
            return service.registry.get_sample_value("flopwatch_records_accepted_total") or 0

        # 40 records durably committed, then the collector goes away.
        await wait_for(lambda: accepted(first) >= 40, "40 records accepted")
        await first.stop()
        # The agent keeps measuring and spooling while the collector is down.
        backend.gate.set()
        await wait_for(backend.exhausted.is_set, "the rest of the trace spooled")
        second = CollectorService(collector_config(db, listen=f"127.0.0.1:{port}"))
        await second.start()
        try:
            assert await run == 0
            assert accepted(second) == 116 - 40
            return await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            await second.stop()

    assert asyncio.run(scenario()) == expected_totals()


def test_agent_restart_resumes_chain_and_collector_refuses_remeasured_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> tuple[int, dict[str, object]]:
        service = CollectorService(collector_config(tmp_path / "c.db"))
        port, _ = await service.start()
        try:
            cfg = agent_config(tmp_path / "a", port)
            assert await asyncio.to_thread(Agent(cfg).run) == 0
            # The same node replays the same seconds again: signed as new records (the chain
            # continues), refused by the collector because those seconds were already counted.
            second = await asyncio.to_thread(Agent(cfg).run)
            return second, await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            await service.stop()

    code, totals = asyncio.run(scenario())
    assert code == 1  # the agent reports that the collector rejected records
    assert totals == expected_totals()


def list_jobs_without_client_cert(ca_pem: Path, port: int) -> grpc.StatusCode:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        try:
            query_stub(channel).ListJobs(collector_pb2.ListJobsRequest(), timeout=10)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def test_mtls_agent_to_collector_and_refusal_without_client_cert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = create_ca()
    write_pair(*pair_paths(tmp_path, "ca"), ca)
    for name, server in (("collector", True), ("agent", False)):
        write_pair(*pair_paths(tmp_path, name), issue(ca.cert, ca.key, name, server=server))
    reader = issue(ca.cert, ca.key, "dashboard", server=False, role="reader")
    write_pair(*pair_paths(tmp_path, "dashboard"), reader)
    ca_pem = tmp_path / "ca.pem"

    async def scenario() -> tuple[int, dict[str, object]]:
        cfg = replace(
            collector_config(tmp_path / "c.db", listen="localhost:0"),
            insecure=False,
            tls_ca=ca_pem,
            tls_cert=tmp_path / "collector.pem",
            tls_key=tmp_path / "collector.key",
        )
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            agent_cfg = replace(
                agent_config(tmp_path / "a", port),
                collector=f"localhost:{port}",
                insecure=False,
                tls_ca=ca_pem,
                tls_cert=tmp_path / "agent.pem",
                tls_key=tmp_path / "agent.key",
            )
            code = await asyncio.to_thread(Agent(agent_cfg).run)
            # A client that shows no certificate of its own is refused by the collector.
            assert await asyncio.to_thread(list_jobs_without_client_cert, ca_pem, port) == (
                grpc.StatusCode.UNAVAILABLE
            )

            def jobs(client: str) -> int:
                tls = ["--tls-ca", str(ca_pem), "--tls-cert", str(tmp_path / f"{client}.pem")]
                tls += ["--tls-key", str(tmp_path / f"{client}.key")]
                return main(["jobs", "--collector", f"localhost:{port}", *tls, "--json"])

            # The agent's certificate streams records but may not list jobs; a reader's may.
            capsys.readouterr()
            assert await asyncio.to_thread(jobs, "agent") != 0
            assert "PERMISSION_DENIED" in capsys.readouterr().err
            assert await asyncio.to_thread(jobs, "dashboard") == 0
            return code, json.loads(capsys.readouterr().out)["jobs"]
        finally:
            await service.stop()

    code, totals = asyncio.run(scenario())
    assert code == 0
    assert totals == expected_totals()


def test_collector_refuses_to_start_without_tls_or_insecure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["collector", "--listen", "127.0.0.1:0", "--db", f"sqlite:{tmp_path / 'c.db'}"])
    assert code == 2
    assert "mTLS needs" in capsys.readouterr().err


def test_records_signed_before_the_key_is_approved_are_counted_once_approved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new node streams before an operator approves its key: the collector answers RETRY,
    the agent keeps its records, and after `flopwatch nodes enroll` every one of them counts."""
    db = tmp_path / "c.db"
    backend = GatedBackend(pause_after=10)

    async def scenario() -> dict[str, object]:
        service = CollectorService(replace(collector_config(db), enroll_on_first_use=False))
        port, _ = await service.start()

        def sample(name: str) -> float:
            return service.registry.get_sample_value(name) or 0

        agent = Agent(agent_config(tmp_path / "a", port), backend=backend)
        run = asyncio.create_task(asyncio.to_thread(agent.run))
        try:
            await wait_for(lambda: sample("flopwatch_records_retry_total") >= 10, "10 retries")
            assert sample("flopwatch_records_accepted_total") == 0
            capsys.readouterr()
            args = ["nodes", "list", "--db", f"sqlite:{db}", "--json"]
            assert await asyncio.to_thread(main, args) == 0
            nodes = json.loads(capsys.readouterr().out)["nodes"]
            [pending] = [n for n in nodes if n["status"] == "pending"]
            assert pending["node"] == "node-1"
            enroll = ["nodes", "enroll", "--db", f"sqlite:{db}", "--key-id", pending["key_id"]]
            assert await asyncio.to_thread(main, enroll) == 0
            backend.gate.set()
            assert await run == 0  # every record acknowledged, none rejected
            assert sample("flopwatch_records_accepted_total") == 116
            return await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            backend.gate.set()
            await service.stop()

    assert asyncio.run(scenario()) == expected_totals()


def test_rounds_signed_together_give_the_same_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five sampling rounds per record (116 rounds: 23 full records and a last one of 1, signed
    when the trace ends): the collector's totals are exactly the offline replay's."""

    async def scenario() -> tuple[float, dict[str, object]]:
        service = CollectorService(collector_config(tmp_path / "c.db"))
        port, _ = await service.start()
        try:
            cfg = replace(agent_config(tmp_path / "a", port), intervals_per_record=5)
            assert await asyncio.to_thread(Agent(cfg).run) == 0
            accepted = service.registry.get_sample_value("flopwatch_records_accepted_total")
            return accepted or 0, await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            await service.stop()

    accepted, totals = asyncio.run(scenario())
    assert accepted == 24
    assert totals == expected_totals()


def test_runs_accounts_and_classes_are_signed_sent_verified_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two jobs of one run, declared in JOBS.json, on a node with a default account: the
    records carry run, account and class under the node's signature, the collector verifies
    and accepts every one (totals unchanged), and the job's report bundle, verified offline,
    says which run, account and class its work was signed with."""
    entries = json.loads(JOBS.read_text())
    for entry in entries:
        if entry["job"] in ("a1", "a2"):
            entry |= {"run": "llama-7b", "account": "acme", "class": "pretraining"}
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps(entries))
    db = tmp_path / "c.db"

    async def scenario() -> tuple[float, float, dict[str, object]]:
        service = CollectorService(collector_config(db))
        port, _ = await service.start()
        try:
            cfg = replace(agent_config(tmp_path / "a", port), jobs_file=jobs, default_account="lab")
            assert await asyncio.to_thread(Agent(cfg).run) == 0
            value = service.registry.get_sample_value
            accepted = value("flopwatch_records_accepted_total") or 0
            rejected = sum(
                s.value
                for m in service.registry.collect()
                if m.name == "flopwatch_records_rejected"
                for s in m.samples
            )
            return accepted, rejected, await asyncio.to_thread(jobs_json, port, capsys)
        finally:
            await service.stop()

    accepted, rejected, totals = asyncio.run(scenario())
    assert accepted > 0 and rejected == 0
    assert totals == expected_totals()

    def verified(job: str) -> list[dict[str, object]]:
        bundle = tmp_path / f"{job}.bundle"
        capsys.readouterr()
        assert main(["report", job, "--db", f"sqlite:{db}", "--out", str(bundle)]) == 0
        key = re.search(r"--collector-key (\S+)", capsys.readouterr().out)
        assert key is not None
        assert main(["verify", str(bundle), "--collector-key", key.group(1), "--json"]) == 0
        runs: list[dict[str, object]] = json.loads(capsys.readouterr().out)["runs"]
        return runs

    declared = {"run": "llama-7b", "account": "acme", "class": "pretraining"}
    assert verified("a1") == verified("a2") == [declared]
    # Undeclared: the job is a run of its own, in the node's default account.
    assert verified("a3") == [{"run": "a3", "account": "lab", "class": "unknown"}]
