"""Collector-side witnessing with two witness servers on loopback: 2-of-2 and 1-of-2 policies, a
witness down, a collector restarted (409, then the proof from the witness's size), and a witness
that saw another history (422, never published)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.tlog_service import TlogService
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import open_note
from flopwatch.witness.service import Witness, witness_handler
from flopwatch.witness.state import WitnessState
from tests.collector.log.log_fakes import MemoryLog

KEY = SigningKey.generate()
ORIGIN = "collector.example/log"


def direct(fn, *args):
    return fn(*args)


class Witnesses:
    """Two witness servers following the test log, each with its own key and state file."""

    def __init__(self, tmp_path: Path) -> None:
        log_verifier = TileLog(MemoryLog(), KEY, ORIGIN).signer.verifier  # type: ignore[arg-type]
        self.cosigners = [
            Cosigner(f"w{i}.example", SigningKey.generate().private_key) for i in range(2)
        ]
        self.services = []
        for i, c in enumerate(self.cosigners):
            state = WitnessState(tmp_path / f"w{i}.db")
            w = Witness(cosigner=c, logs={ORIGIN: [log_verifier]}, state=state)
            self.services.append(HttpService("127.0.0.1:0", witness_handler(w)))

    def policy(self, tmp_path: Path, threshold: str) -> Path:
        lines = [
            f"witness W{i} {c.verifier.vkey()} http://127.0.0.1:{s.port}/"
            for i, (c, s) in enumerate(zip(self.cosigners, self.services, strict=True))
        ]
        path = tmp_path / f"policy-{threshold}"
        path.write_text("\n".join([*lines, f"group both {threshold} W0 W1", "quorum both", ""]))
        return path

    def stop(self, i: int) -> None:
        self.services[i].close()

    def close(self) -> None:
        for s in self.services:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[Witnesses]:
    w = Witnesses(tmp_path)
    yield w
    w.close()


def service_for(log: MemoryLog, policy: Path) -> TlogService:
    config = TlogConfig(witness_policy=policy, witness_timeout_s=5)
    return TlogService(config, TileLog(log, KEY, ORIGIN), direct)  # type: ignore[arg-type]


def cosigners_of(data: bytes, witnesses: Witnesses) -> set[str]:
    _, good = open_note(data, [c.verifier for c in witnesses.cosigners])
    return {s.name for s in good}


def test_two_of_two_publishes_with_both_cosignatures(tmp_path, witnesses):
    log = MemoryLog()
    log.grow_to(300)
    service = service_for(log, witnesses.policy(tmp_path, "all"))
    try:
        assert service.publish()
        data = service.checkpoint()
        assert data is not None
        assert cosigners_of(data, witnesses) == {"w0.example", "w1.example"}
        verifier = TileLog(log, KEY, ORIGIN).signer.verifier  # type: ignore[arg-type]
        assert open_checkpoint(data, [verifier]).checkpoint.size == 300
        log.grow_to(1000)  # the next round sends a consistency proof from 300
        assert service.publish()
        assert cosigners_of(service.checkpoint() or b"", witnesses) == {"w0.example", "w1.example"}
    finally:
        service.close()


def test_with_one_witness_down_two_of_two_holds_back_and_one_of_two_publishes(
    tmp_path, witnesses, caplog
):
    log = MemoryLog()
    log.grow_to(50)
    witnesses.stop(1)
    strict = service_for(log, witnesses.policy(tmp_path, "2"))
    lenient = service_for(log, witnesses.policy(tmp_path, "1"))
    try:
        with caplog.at_level(logging.WARNING):
            assert not strict.publish()
        assert strict.checkpoint() is None
        assert "quorum did not cosign" in caplog.text and "witness W1" in caplog.text
        assert lenient.publish()
        assert cosigners_of(lenient.checkpoint() or b"", witnesses) == {"w0.example"}
    finally:
        strict.close()
        lenient.close()


def test_a_restarted_collector_learns_each_witness_size_from_409(tmp_path, witnesses):
    log = MemoryLog()
    log.grow_to(100)
    policy = witnesses.policy(tmp_path, "all")
    first = service_for(log, policy)
    assert first.publish()
    first.close()
    log.grow_to(200)
    second = service_for(log, policy)  # knows no witness size: asks from 0, gets 409 "100"
    try:
        assert second.publish()
        assert all(c.known_size == 200 for c in second._witnessing.clients)  # type: ignore[union-attr]
    finally:
        second.close()


def test_a_log_that_rewrote_history_is_refused_and_not_published(tmp_path, witnesses, caplog):
    honest = MemoryLog()
    honest.grow_to(100)
    policy = witnesses.policy(tmp_path, "1")
    first = service_for(honest, policy)
    assert first.publish()
    first.close()
    forked = MemoryLog()
    forked.grow_to(10)
    forked.add(b"a rewritten entry")
    forked.grow_to(150)
    liar = service_for(forked, policy)
    try:
        with caplog.at_level(logging.ERROR):
            assert not liar.publish()
        assert liar.checkpoint() is None
        assert "REFUSED AS INCONSISTENT" in caplog.text
    finally:
        liar.close()
