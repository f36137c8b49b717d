"""A running collector's log in the C2SP formats: checkpoints, witnessing, tiles over HTTP(S) and
in a directory (`TlogConfig`).

Every `checkpoint_interval_s`, if the log grew: sign a checkpoint of it (store thread), have the
policy's witnesses cosign it (`witnessing`), and once the quorum did, publish it: keep it in the
store, write the new tiles and then the checkpoint to the directory, and serve it. Until then the
previous checkpoint stays published, and nothing beyond it is served. After a restart the
checkpoint kept in the store is served at once (if it is this log's, matches the tree held and
meets the witness policy), and the directory is brought up to it. Store reads go through
`on_store`, which runs a function on the store's own thread (the collector's ingest thread).
"""

from __future__ import annotations

import logging
import ssl
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.log.checkpoints import TileLog, default_origin, fits
from flopwatch.collector.log.tiles_dir import MAX_TILES_PER_WRITE, TileDirectory
from flopwatch.collector.log.tiles_http import TileAuth, tiles_handler
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.witnessing import Witnessing
from flopwatch.collector.store.base import LogStore
from flopwatch.errors import ConfigError, LogRangeError, VerificationError
from flopwatch.httpserve import HttpService, server_tls
from flopwatch.keys import SigningKey
from flopwatch.tlog.policy import parse_policy
from flopwatch.tlog.tiles import ENTRY_TOO_LARGE, TileRef, new_tiles

log = logging.getLogger(__name__)

T = TypeVar("T")
OnStore = Callable[..., Any]  # on_store(fn, *args) -> fn(*args), run on the store's thread

MIN_TOKEN_BYTES = 16


def load_token(path: Path) -> bytes:
    """A bearer token file: owner-only mode, at least 16 bytes, whitespace stripped."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the tiles token {path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"tiles token {path} must be readable by its owner only (chmod 600)")
    if len(data) < MIN_TOKEN_BYTES or not data.isascii() or any(c <= 32 for c in data):
        raise ConfigError(f"tiles token {path} must be at least {MIN_TOKEN_BYTES} printable bytes")
    return data


def load_witnessing(config: TlogConfig) -> Witnessing | None:
    if config.witness_policy is None:
        return None
    try:
        data = config.witness_policy.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the witness policy {config.witness_policy}: {e}") from e
    try:
        policy = parse_policy(data)
    except VerificationError as e:
        raise ConfigError(f"witness policy {config.witness_policy}: {e.message}") from e
    return Witnessing(policy, timeout_s=config.witness_timeout_s)


def start_tlog(
    config: CollectorConfig, store: LogStore, key: SigningKey, executor: Executor
) -> TlogService:
    """The C2SP log of a collector starting up (`config.tlog` set): HTTPS with the collector's
    certificate and mTLS clients unless it runs --insecure."""
    assert config.tlog is not None
    tlog = config.tlog
    tile_log = TileLog(store, key, tlog.origin or default_origin(key))

    def on_store(fn: Callable[..., T], *args: Any) -> T:
        return executor.submit(fn, *args).result()

    tls = None
    if tlog.tiles_listen is not None and not config.insecure:
        if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
            raise ConfigError("the tiles server needs --tls-cert, --tls-key and --tls-ca")
        tls = server_tls(
            config.tls_cert, config.tls_key, config.tls_ca, require_client=tlog.token_file is None
        )
    return TlogService(tlog, tile_log, on_store, tls=tls, client_certificates=tls is not None)


class TlogService:
    """Publishes checkpoints of `tile_log` and serves what the latest one covers."""

    def __init__(
        self,
        config: TlogConfig,
        tile_log: TileLog,
        on_store: OnStore,
        *,
        tls: ssl.SSLContext | None = None,
        client_certificates: bool = False,
    ) -> None:
        self.config = config
        self._tile_log = tile_log
        self._on_store = on_store
        self._lock = threading.Lock()
        self._published: tuple[int, bytes] | None = None
        self._witnessing = load_witnessing(config)
        self._dir = None if config.tiles_dir is None else TileDirectory(config.tiles_dir)
        self._dir_size = 0 if self._dir is None else self._dir.written_size()
        self._resume()
        self._http: HttpService | None = None
        if config.tiles_listen is not None:
            token = None if config.token_file is None else load_token(config.token_file)
            if token is None and not client_certificates:
                raise ConfigError(
                    "the tiles server needs readers to authenticate: give a token file, or run "
                    "the collector with mTLS"
                )
            if tls is None:
                log.warning("tiles served over plaintext HTTP: the bearer token travels in clear")
            auth = TileAuth(token, client_certificates)
            handler = tiles_handler(self, auth)
            self._http = HttpService(config.tiles_listen, handler, limits=config.http, tls=tls)
        log.info("log origin %s; tiles on %s", tile_log.origin, self.port)

    @property
    def port(self) -> int | None:
        return None if self._http is None else self._http.port

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._witnessing is not None:
            self._witnessing.close()

    def _resume(self) -> None:
        """Serve the checkpoint published before a restart, if it still holds."""
        kept = self._on_store(self._tile_log.published)
        if kept is None:
            return
        signed, data = kept
        size = signed.checkpoint.size
        if self._witnessing is not None and not self._witnessing.resume(
            signed.checkpoint, signed.note
        ):
            log.warning(
                "the checkpoint %d kept from before the restart lacks the cosignatures the "
                "witness policy asks for; nothing is served until a new one is witnessed",
                size,
            )
            return
        self._published = (size, data)
        log.info("serving checkpoint %d, published before the restart", size)

    # -- TileSource ---------------------------------------------------------------------------
    def checkpoint(self) -> bytes | None:
        with self._lock:
            return None if self._published is None else self._published[1]

    def tile(self, ref: TileRef) -> bytes:
        with self._lock:
            size = 0 if self._published is None else self._published[0]
        if not fits(ref, size):
            raise LogRangeError(f"{ref.path()} is beyond the published checkpoint")
        data: bytes = self._on_store(self._tile_log.read, ref, size)
        return data

    # -- publishing ---------------------------------------------------------------------------
    def publish(self) -> bool:
        """One round: checkpoint the log, witness it, publish it. True if a new one went out.

        Blocking (HTTP to witnesses, file writes): run it off the event loop."""
        checkpoint, note = self._on_store(self._tile_log.checkpoint)
        with self._lock:
            published = self._published
        if published is not None and published[0] == checkpoint.size:
            if self._dir is not None and self._dir_size < published[0]:
                self._write_dir(*published)  # the directory was behind what is served
            return False
        if self._witnessing is not None:

            def proof(old: int) -> tuple[bytes, ...]:
                p: tuple[bytes, ...] = self._on_store(
                    self._tile_log.consistency_proof, old, checkpoint.size
                )
                return p

            cosigned, _ = self._witnessing.cosign(checkpoint, note, proof)
            if cosigned is None:
                log.warning(
                    "checkpoint %d not published: the witness policy's quorum did not cosign it",
                    checkpoint.size,
                )
                return False
            note = cosigned
        data = note.to_bytes()
        self._on_store(self._tile_log.keep_published, checkpoint.size, data)
        if self._dir is not None:
            self._write_dir(checkpoint.size, data)
        with self._lock:
            self._published = (checkpoint.size, data)
        log.info("published checkpoint %d of %s", checkpoint.size, self._tile_log.origin)
        return True

    def _write_dir(self, size: int, data: bytes) -> None:
        assert self._dir is not None
        tiles = new_tiles(min(self._dir_size, size), size)

        def read(ref: TileRef) -> bytes | None:
            try:
                out: bytes = self._on_store(self._tile_log.read, ref, size)
            except VerificationError as e:
                if e.reason != ENTRY_TOO_LARGE:
                    raise
                # Only a log that accepted such entries before the collector refused them
                # (--max-envelope-bytes above 65535, tiles off) holds one; its bundle cannot
                # exist, the hashes' tile does.
                log.error("entry bundle %s not written: %s", ref.path(), e.message)
                return None
            return out

        for start in range(0, len(tiles), MAX_TILES_PER_WRITE):
            self._dir.write(tiles[start : start + MAX_TILES_PER_WRITE], read, None)
        self._dir.write([], read, data)
        self._dir_size = size
