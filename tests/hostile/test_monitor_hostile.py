"""Hostile logs against the monitor: whatever a log serves as its checkpoint, tiles or entry
bundles, and whatever its HTTP server answers, the monitor never crashes, never counts what the
honest log does not hold, and stops at a bounded cost.

Property (hypothesis, fixed node keys): a monitor following a log that serves one mutated
answer (the checkpoint, a hash tile, an entry bundle) either counts exactly the honest log's
entries or reports a problem and counts a subset of them; a poll raises nothing. The HTTP
client bounds answers (size, gzip), refuses odd encodings and statuses with TransportError.
"""

from __future__ import annotations

import gzip
import itertools
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.dsse import Envelope
from flopwatch.errors import TransportError, VerificationError
from flopwatch.httpserve import HttpService
from flopwatch.monitor.config import LogConfig, MonitorConfig
from flopwatch.monitor.fetch import FetchLimits, TileFetcher
from flopwatch.monitor.service import Monitor
from flopwatch.statements import ENROLLED, NODE_KEY_TYPE, REVOKED, NodeKeyStatement
from flopwatch.tlog.tiles import TileRef, parse_tile_path
from tests.collector.log.log_fakes import MemoryLog
from tests.hostile.hostile_helpers import HOSTILE, fixed_key
from tests.hostile.test_tlog_parsers_hostile import mutated
from tests.nodes import Node, expected_totals

NODE = Node("n1", gpus=2, key=fixed_key("monitor-hostile-node"))
ENVELOPES = NODE.envelopes(300)  # a full bundle, a partial one, tiles at two levels
HONEST = expected_totals([NODE], ENVELOPES)["slurm:c/1"]
STORE = MemoryLog()
STORE.add(*ENVELOPES)
TILES = TileLog(STORE, fixed_key("monitor-hostile-log"), "hostile.example/log")  # type: ignore[arg-type]
CHECKPOINT = TILES.checkpoint()[1].to_bytes()
NODE_KEY = NodeKeyStatement(NODE.node_id, NODE.public_raw, REVOKED, 1, 1000)
PATHS = ["checkpoint", "tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/000"]


class HostileLog:
    """The honest log, but one path answers `bad` (a fetcher: no HTTP, so examples are fast)."""

    def __init__(self, path: str, bad: bytes) -> None:
        self.path, self.bad = path, bad

    def checkpoint(self) -> bytes:
        return self.bad if self.path == "checkpoint" else CHECKPOINT

    def fetch(self, ref: TileRef) -> bytes:
        return self.bad if ref.path() == self.path else TILES.read(ref, 300)


def honest(path: str) -> bytes:
    if path == "checkpoint":
        return CHECKPOINT
    return TILES.read(parse_tile_path(path), 300)


_RUN = itertools.count()


def follow(tmp: Path, fetcher: HostileLog) -> tuple[int, int]:
    config = MonitorConfig(
        logs=(
            LogConfig(
                name="h",
                url="http://127.0.0.1:9/",
                log_key=TILES.signer.verifier,
                node_keys={NODE.key.key_id: NODE.key.public_key},
            ),
        ),
        state=tmp / f"m{next(_RUN)}.db",
    )
    m = Monitor(config, fetchers={"h": fetcher})
    try:
        m.catch_up(max_rounds=5)
        f = m.state.totals().get(("job", "slurm:c/1"))
        return (0, 0) if f is None else (f.flops_estimate, f.flops_upper)
    finally:
        m.close()


def test_the_honest_log_is_counted_whole(tmp_path: Path) -> None:
    assert list(follow(tmp_path, HostileLog("", b""))) == HONEST


@HOSTILE
@given(data=st.data(), path=st.sampled_from(PATHS))
def test_a_mutated_answer_is_reported_never_crashes_never_overcounts(tmp_path, data, path):
    bad = data.draw(st.one_of(mutated(honest(path)), st.binary(max_size=600)))
    estimate, upper = follow(tmp_path, HostileLog(path, bad))
    assert estimate <= HONEST[0] and upper <= HONEST[1]
    if bad == honest(path):
        assert [estimate, upper] == HONEST


class LogOf:
    """A fetcher of the log holding `entries` (signed by the same log key as TILES)."""

    def __init__(self, entries: list[bytes]) -> None:
        store = MemoryLog()
        store.add(*entries)
        self.size = len(entries)
        self.tiles = TileLog(store, fixed_key("monitor-hostile-log"), "hostile.example/log")  # type: ignore[arg-type]
        self.note = self.tiles.checkpoint()[1].to_bytes()

    def checkpoint(self) -> bytes:
        return self.note

    def fetch(self, ref: TileRef) -> bytes:
        return self.tiles.read(ref, self.size)


@HOSTILE
@given(payload=st.one_of(mutated(NODE_KEY.payload()), st.binary(max_size=600)))
def test_a_hostile_node_key_statement_signed_by_the_log_key_never_crashes_the_monitor(
    tmp_path, payload
):
    """Whatever a statement (signed by the log key, so its payload is read) says, the monitor
    learns from it or reports it; the pinned node's records count whole unless it is a sound
    statement that rules them out (its key revoked from leaf 0, or enrolled for another node)."""
    log_key = fixed_key("monitor-hostile-log")
    envelope = Envelope.sign(payload, log_key, NODE_KEY_TYPE)
    estimate, upper = follow(tmp_path, LogOf([envelope.to_bytes(), *ENVELOPES]))  # type: ignore[arg-type]
    try:
        said = NodeKeyStatement.verified(envelope, log_key.public_key)
        rules_out = said.key_id == NODE.key_id and (
            (said.action == REVOKED and said.log_size == 0)
            or (said.action == ENROLLED and said.node_id != NODE.node_id)
        )
    except VerificationError:
        rules_out = False
    assert [estimate, upper] == ([0, 0] if rules_out else HONEST)


# -- the HTTP client ----------------------------------------------------------------------------


def answering(status: int, body: bytes, headers: dict[str, str]) -> HttpService:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return HttpService("127.0.0.1:0", Handler)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "body", "headers", "message"),
    [
        (200, b"x" * (9000), {}, "over 8192 bytes"),  # a tile can be 8,192 bytes at most
        (200, gzip.compress(bytes(10 << 20)), {"Content-Encoding": "gzip"}, "over 8192"),
        (200, b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, "bad gzip"),
        (200, b"abc", {"Content-Encoding": "br"}, "unknown Content-Encoding"),
        (500, b"oops", {}, "HTTP 500"),
        (302, b"", {"Location": "http://example.invalid/"}, "HTTP 302"),
    ],
)
def test_the_client_bounds_and_refuses_odd_answers(status, body, headers, message) -> None:
    server = answering(status, body, headers)
    fetcher = TileFetcher(f"http://127.0.0.1:{server.port}/", limits=FetchLimits(timeout_s=5))
    try:
        with pytest.raises(TransportError, match=message):
            fetcher.fetch(TileRef(0, 0))
    finally:
        fetcher.close()
        server.close()


def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    port = listener.getsockname()[1]
    fetcher = TileFetcher(f"http://127.0.0.1:{port}/", limits=FetchLimits(timeout_s=0.5))
    try:
        with pytest.raises(TransportError):
            fetcher.checkpoint()
    finally:
        fetcher.close()
        listener.close()
