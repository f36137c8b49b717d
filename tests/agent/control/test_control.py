"""The agent's control socket: `flopwatch job start|end|list` against a real gRPC server on a
unix socket, and registrations that survive an agent restart mid-job."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from flopwatch.agent.attribution.registry import JobRegistry
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.control.server import ControlServer
from flopwatch.agent.service import Agent
from flopwatch.cli.main import main
from flopwatch.errors import ConfigError
from flopwatch.keys import SigningKey
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier
from tests.agent.agent_fakes import FakeCollector, start_sync
from tests.agent.backends.tick_backend import H100, TickBackend, wait_until

T = TypeVar("T")


def serve(tmp_path: Path, body: Callable[[Path], T]) -> T:
    """Run a control server over a fresh registry while `body(socket_path)` runs in a thread."""
    path = tmp_path / "ctl" / "agent.sock"
    registry = JobRegistry(tmp_path / "jobs.json", cluster="c1", gpus=H100)

    async def scenario() -> T:
        server = ControlServer(path, registry)
        await server.start()
        try:
            return await asyncio.to_thread(body, path)
        finally:
            await server.stop()

    return asyncio.run(scenario())


def job(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["job", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_start_list_end_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def body(sock: Path) -> None:
        s = ["--socket", str(sock)]
        code, out, _ = job(
            [
                "start",
                "--job",
                "881",
                "--source",
                "slurm",
                "--gpus",
                "1,0",
                "--precision",
                "fp8",
                "--json",
                *s,
            ],
            capsys,
        )
        assert code == 0
        started = json.loads(out)
        assert started["job_id"] == "slurm:c1/881"
        assert started["gpus"] == ["GPU-tick-1", "GPU-tick-0"]
        assert (started["precision"], started["end_unix_s"]) == ("fp8", None)

        code, out, _ = job(["list", *s], capsys)
        assert code == 0 and "slurm:c1/881  running  GPUs: GPU-tick-1,GPU-tick-0" in out

        code, out, _ = job(["end", "--job", "881", "--source", "slurm", "--json", *s], capsys)
        assert code == 0 and json.loads(out)["end_unix_s"] >= started["start_unix_s"]

        code, out, _ = job(["list", "--json", *s], capsys)
        [listed] = json.loads(out)["jobs"]
        assert listed["end_unix_s"] is not None

    serve(tmp_path, body)


def test_refusals_carry_clear_messages_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def body(sock: Path) -> None:
        s = ["--socket", str(sock)]
        code, _, err = job(["start", "--job", "x", "--gpus", "9", *s], capsys)
        assert code == 2 and "GPU '9' is not on this node" in err
        code, _, err = job(["end", "--job", "never-started", *s], capsys)
        assert code == 3 and "no job manual:c1/never-started is registered" in err
        assert job(["start", "--job", "y", "--gpus", "0", *s], capsys)[0] == 0
        code, _, err = job(["start", "--job", "y", "--gpus", "1", *s], capsys)
        assert code == 3 and "already running" in err

    serve(tmp_path, body)


def test_start_declares_run_class_and_account_over_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def body(sock: Path) -> None:
        s = ["--socket", str(sock)]
        labels = ["--run", "llama-7b", "--class", "fine-tuning", "--account", "acme"]
        code, out, _ = job(["start", "--job", "j", "--gpus", "0", *labels, "--json", *s], capsys)
        assert code == 0
        started = json.loads(out)
        assert (started["run"], started["class"], started["account"]) == (
            "llama-7b",
            "fine-tuning",
            "acme",
        )
        code, out, _ = job(["list", *s], capsys)
        assert "run: llama-7b  account: acme  class: fine-tuning" in out
        # Not declared: shown as such, and no account invented.
        code, out, _ = job(["start", "--job", "k", "--json", *s], capsys)
        assert json.loads(out) | {"start_unix_s": 0} == json.loads(out) | {
            "run": None,
            "account": None,
            "class": "unknown",
            "start_unix_s": 0,
        }
        # A bad run is refused, with the reason, and nothing is registered.
        code, _, err = job(["start", "--job", "m", "--run", "slurm:c1/5", *s], capsys)
        assert code == 2 and "form of a job id" in err
        code, _, err = job(["start", "--job", "m", "--account", "a\x1b[2J", *s], capsys)
        assert code == 2 and "account" in err
        code, out, _ = job(["list", "--json", *s], capsys)
        assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["manual:c1/j", "manual:c1/k"]

    serve(tmp_path, body)


def test_start_declares_the_runs_parent_over_the_socket_and_it_reaches_the_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def body(sock: Path) -> None:
        s = ["--socket", str(sock)]
        labels = ["--run", "llama-ft", "--parent", "llama", "--class", "fine-tuning"]
        code, out, _ = job(["start", "--job", "j", "--gpus", "0", *labels, "--json", *s], capsys)
        assert code == 0
        assert (json.loads(out)["run"], json.loads(out)["parent"]) == ("llama-ft", "llama")
        code, out, _ = job(["list", *s], capsys)
        assert "run: llama-ft  account: (none)  class: fine-tuning  parent: llama" in out
        # A parent needs a run, and follows the identifier rule; nothing is registered then.
        code, _, err = job(["start", "--job", "m", "--parent", "llama", *s], capsys)
        assert code == 2 and "parent 'llama' is declared without a run" in err
        bad = ["--run", "r", "--parent", "l\x1b[2J"]
        code, _, err = job(["start", "--job", "m", *bad, *s], capsys)
        assert code == 2 and "parent" in err and "unprintable" in err
        code, out, _ = job(["list", "--json", *s], capsys)
        assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["manual:c1/j"]

    serve(tmp_path, body)
    # The registration persists with its parent, and its windows carry it.
    registry = JobRegistry(tmp_path / "jobs.json", cluster="c1", gpus=H100)
    [registered] = registry.jobs()
    assert registered.run_parent == "llama"
    assert {w.run_parent for w in registered.windows()} == {"llama"}
    assert registered.declared.run_parent == "llama"


def test_the_agent_setting_for_the_socket_is_the_cli_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def body(sock: Path) -> int:
        monkeypatch.setenv("FLOPWATCH_AGENT_CONTROL_SOCKET", str(sock))
        return job(["list"], capsys)[0]

    assert serve(tmp_path, body) == 0


def test_no_agent_on_the_socket_is_a_runtime_error_that_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = job(["end", "--job", "1", "--socket", str(tmp_path / "none.sock")], capsys)
    assert code == 3
    assert "no agent answers on" in err and "--control-socket" in err


def test_socket_mode_is_0660_and_it_is_removed_on_stop(tmp_path: Path) -> None:
    def body(sock: Path) -> int:
        return stat.S_IMODE(sock.stat().st_mode)

    assert serve(tmp_path, body) == 0o660
    assert not (tmp_path / "ctl" / "agent.sock").exists()


def test_a_stale_socket_is_replaced_and_a_live_one_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "ctl" / "agent.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: an agent that died
    assert serve(tmp_path, lambda sock: sock.is_socket())

    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen()
    try:
        registry = JobRegistry(tmp_path / "jobs.json", cluster="c1", gpus=H100)
        with pytest.raises(ConfigError, match="another process serves"):
            asyncio.run(ControlServer(path, registry).start())
    finally:
        live.close()
        path.unlink()


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    path.write_text("not a socket")
    registry = JobRegistry(tmp_path / "jobs.json", cluster="c1", gpus=H100)
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        asyncio.run(ControlServer(path, registry).start())


# An agent with a control socket, restarted in the middle of a job.


@pytest.fixture
def collector() -> Iterator[tuple[FakeCollector, int]]:
    fake = FakeCollector()
    server, port = start_sync(fake)
    yield fake, port
    server.stop(None)


class RunningAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.backend = TickBackend()
        self.agent = Agent(config, backend=self.backend)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.agent.started.wait(30), "agent did not start"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def shares_of_last(fake: FakeCollector, key: SigningKey) -> list[tuple[str, int, int]]:
    verifier = RecordVerifier(trusted_keys={key.key_id: key.public_key})
    record = verifier.verify_bytes(fake.held[max(fake.held)])
    iv = record.attestation.intervals[0]
    return [(j.job_id, j.share_ppm, j.declared_precision) for j in iv.jobs]


def test_registered_job_keeps_its_attribution_across_an_agent_restart(
    tmp_path: Path, collector: tuple[FakeCollector, int], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, port = collector
    sock = tmp_path / "agent.sock"
    config = AgentConfig(
        collector=f"127.0.0.1:{port}",
        backend="sim:1",  # not built: RunningAgent passes a TickBackend
        state_dir=tmp_path / "state",
        node_id="node-7",
        cluster="lab",
        insecure=True,
        control_socket=sock,
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
    )
    first = RunningAgent(config)
    try:
        code, _, _ = job(
            [
                "start",
                "--job",
                "train",
                "--gpus",
                "all",
                "--precision",
                "fp8",
                "--socket",
                str(sock),
            ],
            capsys,
        )
        assert code == 0
        first.backend.tick()
        wait_until(lambda: len(fake.held) == 1, "the first record")
    finally:
        first.close()
    key = SigningKey.load(config.key_path)
    assert shares_of_last(fake, key) == [("manual:lab/train", 1_000_000, pb.PRECISION_FP8)]

    second = RunningAgent(config)  # same state dir; nobody registers the job again
    try:
        second.backend.tick()
        wait_until(lambda: len(fake.held) == 2, "a record after the restart")
        assert shares_of_last(fake, key) == [("manual:lab/train", 1_000_000, pb.PRECISION_FP8)]
        assert job(["end", "--job", "train", "--socket", str(sock)], capsys)[0] == 0
        second.backend.tick()
        wait_until(lambda: len(fake.held) == 3, "a record after the job ended")
        assert shares_of_last(fake, key) == [
            ("unattributed:lab/node-7", 1_000_000, pb.PRECISION_UNSPECIFIED)
        ]
    finally:
        second.close()
