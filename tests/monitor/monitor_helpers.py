"""Collectors' logs for the monitor tests: records in memory, built the way a store builds them
(`MemoryLog`, `TileLog`), served as tlog-tiles over loopback HTTP with a bearer token by the
collector's own tiles handler; a test can tamper with any path the server answers, rewrite the
log, and publish checkpoints with or without witness cosignatures."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

from flopwatch.collector.log.checkpoints import TileLog, fits
from flopwatch.collector.log.tiles_http import TileAuth, tiles_handler
from flopwatch.errors import LogRangeError
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.monitor.config import LogConfig, MonitorConfig, MonitorLimits
from flopwatch.monitor.labels import Entities
from flopwatch.monitor.service import Monitor
from flopwatch.monitor.totals import Threshold
from flopwatch.monitor.windows import Windows
from flopwatch.statements import ENROLLED, NodeKeyStatement
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Note, parse_note
from flopwatch.tlog.policy import Policy, parse_policy
from flopwatch.tlog.tiles import TileRef
from tests.collector.log.log_fakes import MemoryLog
from tests.nodes import Node

TOKEN = "monitor-test-token-0123456789"
NOW = 1_900_000_000


class ServedLog:
    """One collector's log on loopback: add envelopes, publish, tamper."""

    def __init__(self, origin: str, token: str = TOKEN) -> None:
        self.origin = origin
        self.key = SigningKey.generate()
        self.store = MemoryLog()
        self.tile_log = TileLog(self.store, self.key, origin)  # type: ignore[arg-type]
        self.published: tuple[int, bytes] | None = None
        self.overrides: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.http = HttpService(
            "127.0.0.1:0", tiles_handler(self, TileAuth(token.encode(), client_certificates=False))
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/"

    def close(self) -> None:
        self.http.close()

    # -- TileSource --------------------------------------------------------------------------
    def checkpoint(self) -> bytes | None:
        if "checkpoint" in self.overrides:
            return self.overrides["checkpoint"]
        return None if self.published is None else self.published[1]

    def tile(self, ref: TileRef) -> bytes:
        self.requests.append(ref.path())
        if ref.path() in self.overrides:
            return self.overrides[ref.path()]
        size = 0 if self.published is None else self.published[0]
        if not fits(ref, size):
            raise LogRangeError(ref.path())
        return self.tile_log.read(ref, size)

    # -- the operator ------------------------------------------------------------------------
    def add(self, envelopes: Iterable[bytes]) -> None:
        self.store.add(*envelopes)

    def publish(self, cosigners: Sequence[Cosigner] = ()) -> bytes:
        checkpoint, note = self.tile_log.checkpoint()
        sigs = tuple(c.cosign(checkpoint.body(), NOW) for c in cosigners)
        data = Note(note.text, (*note.signatures, *sigs)).to_bytes()
        self.published = (checkpoint.size, data)
        return data

    def key_statement(self, node: Node, action: str = ENROLLED, log_size: int = 0) -> bytes:
        """A node key statement signed by this log's collector key."""
        statement = NodeKeyStatement(node.node_id, node.public_raw, action, NOW, log_size)
        return statement.sign(self.key).to_bytes()

    def rewrite(self, keep: int, envelopes: Iterable[bytes]) -> None:
        """Replace the log by its first `keep` entries and then `envelopes` (a forked history)."""
        old = self.store.leaves[:keep]
        self.store = MemoryLog()
        self.store.add(*old, *envelopes)
        self.tile_log = TileLog(self.store, self.key, self.origin)  # type: ignore[arg-type]

    def log_config(
        self, name: str, tmp: Path, nodes: Sequence[Node] | None, policy: Policy | None = None
    ) -> LogConfig:
        """`nodes`: the node keys pinned (None: the monitor learns them from the log)."""
        token = tmp / f"{name}.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        return LogConfig(
            name=name,
            url=self.url,
            log_key=self.tile_log.signer.verifier,
            node_keys=None if nodes is None else {n.key.key_id: n.key.public_key for n in nodes},
            token_file=token,
            policy=policy,
        )


def witness_policy(*cosigners: Cosigner, quorum: str = "all") -> Policy:
    lines = [f"witness w{i} {c.verifier.vkey()}" for i, c in enumerate(cosigners)]
    members = " ".join(f"w{i}" for i in range(len(cosigners)))
    lines += [f"group g {quorum} {members}", "quorum g"]
    return parse_policy(("\n".join(lines) + "\n").encode())


def monitor(
    tmp: Path,
    logs: Sequence[LogConfig],
    *,
    thresholds: Sequence[Threshold] = (),
    entities: Entities | None = None,
    max_tiles_per_poll: int = 1024,
    state: str = "monitor.db",
    windows: Windows | None = None,
    max_metric_totals: int = 1000,
) -> Monitor:
    config = MonitorConfig(
        logs=tuple(logs),
        state=tmp / state,
        thresholds=tuple(thresholds),
        entities=entities or Entities(),
        limits=MonitorLimits(
            max_tiles_per_poll=max_tiles_per_poll, max_metric_totals=max_metric_totals
        ),
        windows=windows or Windows(),
    )
    ticks = itertools.count(NOW * 10**9)  # a clock that moves: problems keep their order
    return Monitor(config, clock_ns=lambda: next(ticks))


def strip_cosignatures(checkpoint: bytes) -> bytes:
    note = parse_note(checkpoint)
    return Note(note.text, note.signatures[:1]).to_bytes()
