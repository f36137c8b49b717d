"""Tiles over HTTP(S) on loopback: authentication required (token or client certificate), cache
headers, full and partial tiles, entry bundles (gzipped on request), and only what the published
checkpoint covers; the directory writer writes the same bytes at the same paths."""

from __future__ import annotations

import gzip
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch import merkle
from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.tlog_service import TlogService
from flopwatch.errors import ConfigError
from flopwatch.httpserve import server_tls
from flopwatch.keys import SigningKey
from flopwatch.tlog.checkpoint import open_checkpoint
from flopwatch.tlog.tiles import TileRef, decode_bundle, decode_tile, new_tiles
from tests.collector.collector_helpers import make_pki
from tests.collector.log.log_fakes import MemoryLog

KEY = SigningKey.generate()
ORIGIN = "collector.example/log"
TOKEN = "s3cret-token-0123456789"


def direct(fn, *args):  # the tests' "store thread" is the caller's
    return fn(*args)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def served(token_file: Path) -> Iterator[tuple[TlogService, MemoryLog]]:
    log = MemoryLog()
    log.grow_to(600)
    config = TlogConfig(tiles_listen="127.0.0.1:0", token_file=token_file)
    service = TlogService(config, TileLog(log, KEY, ORIGIN), direct)  # type: ignore[arg-type]
    yield service, log
    service.close()


def get(
    port: int, path: str, headers: dict[str, str] | None = None, context=None
) -> tuple[int, dict[str, str], bytes]:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_every_path_needs_the_token(served):
    service, _ = served
    service.publish()
    for path in ["/checkpoint", "/tile/0/000", "/tile/entries/000", "/nothing"]:
        status, headers, _ = get(service.port, path)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert get(service.port, path, {"Authorization": "Bearer wrong-token-0123456"})[0] == 401
        assert get(service.port, path, {"Authorization": TOKEN})[0] == 401


def test_nothing_is_served_before_a_checkpoint_is_published(served):
    service, _ = served
    assert get(service.port, "/checkpoint", AUTH)[0] == 404
    assert get(service.port, "/tile/0/000", AUTH)[0] == 404


def test_checkpoint_tiles_and_entries_with_their_headers(served):
    service, log = served
    assert service.publish()
    assert not service.publish()  # the log did not grow: nothing new
    status, headers, body = get(service.port, "/checkpoint", AUTH)
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["cache-control"] == "private, max-age=5"
    checkpoint = open_checkpoint(body, [TileLog(log, KEY, ORIGIN).signer.verifier]).checkpoint  # type: ignore[arg-type]
    assert checkpoint.size == 600
    # Full tile, then the partial one of this size (600 = 2 * 256 + 88).
    status, headers, full = get(service.port, "/tile/0/001", AUTH)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert headers["cache-control"] == "private, max-age=31536000, immutable"
    assert decode_tile(full, 256) == [merkle.leaf_hash(e) for e in log.leaves[256:512]]
    status, _, partial = get(service.port, "/tile/0/002.p/88", AUTH)
    assert status == 200 and len(partial) == 88 * 32
    level1 = decode_tile(get(service.port, "/tile/1/000.p/2", AUTH)[2], 2)
    assert level1[1] == merkle.root_hash(decode_tile(full, 256))
    # A partial tile wider than the tree, a full tile not yet full: not in the tree.
    assert get(service.port, "/tile/0/002.p/89", AUTH)[0] == 404
    assert get(service.port, "/tile/0/002", AUTH)[0] == 404
    # Entry bundles, plain and gzipped.
    status, headers, plain = get(service.port, "/tile/entries/002.p/88", AUTH)
    assert status == 200 and "content-encoding" not in headers
    assert decode_bundle(plain, 88) == log.leaves[512:]
    status, headers, zipped = get(
        service.port, "/tile/entries/000", {**AUTH, "Accept-Encoding": "gzip, identity"}
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert decode_bundle(gzip.decompress(zipped), 256) == log.leaves[:256]
    # Malformed paths are refused with the reason.
    status, _, body = get(service.port, "/tile/0/02", AUTH)
    assert status == 400 and b"bad_tile_path" in body


def test_what_the_log_holds_beyond_the_published_checkpoint_is_not_served(served):
    service, log = served
    service.publish()
    log.grow_to(700)
    assert get(service.port, "/tile/0/002.p/188", AUTH)[0] == 404
    assert service.publish()
    assert get(service.port, "/tile/0/002.p/188", AUTH)[0] == 200
    assert get(service.port, "/tile/0/002.p/88", AUTH)[0] == 200  # the older partial stays


def test_a_tiles_server_without_any_reader_authentication_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="authenticate"):
        TlogService(
            TlogConfig(tiles_listen="127.0.0.1:0"), TileLog(MemoryLog(), KEY, ORIGIN), direct
        )  # type: ignore[arg-type]
    loose = tmp_path / "loose"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        TlogService(
            TlogConfig(tiles_listen="127.0.0.1:0", token_file=loose),
            TileLog(MemoryLog(), KEY, ORIGIN),
            direct,
        )  # type: ignore[arg-type]


def test_over_https_a_client_certificate_or_the_token_authenticates(tmp_path, token_file):
    pki = make_pki(tmp_path)
    log = MemoryLog()
    log.grow_to(10)
    tls = server_tls(pki["server_cert"], pki["server_key"], pki["ca_cert"], require_client=False)
    config = TlogConfig(tiles_listen="127.0.0.1:0", token_file=token_file)
    service = TlogService(
        config,
        TileLog(log, KEY, ORIGIN),
        direct,
        tls=tls,
        client_certificates=True,  # type: ignore[arg-type]
    )
    try:
        service.publish()
        with_cert = ssl.create_default_context(cafile=pki["ca_cert"])
        with_cert.load_cert_chain(pki["client_cert"], pki["client_key"])
        assert get(service.port, "/checkpoint", context=with_cert)[0] == 200
        without = ssl.create_default_context(cafile=pki["ca_cert"])
        assert get(service.port, "/checkpoint", context=without)[0] == 401
        assert get(service.port, "/checkpoint", AUTH, context=without)[0] == 200
    finally:
        service.close()


def test_the_directory_holds_the_same_tiles_and_resumes_where_it_stopped(tmp_path):
    log = MemoryLog()
    log.grow_to(600)
    tiles_dir = tmp_path / "tiles"
    config = TlogConfig(tiles_dir=tiles_dir)
    tile_log = TileLog(log, KEY, ORIGIN)  # type: ignore[arg-type]
    service = TlogService(config, tile_log, direct)
    assert service.publish()
    files = {str(p.relative_to(tiles_dir)) for p in tiles_dir.rglob("*") if p.is_file()}
    want = {ref.path() for ref in new_tiles(0, 600)} | {"checkpoint"}
    assert files == want
    for ref in new_tiles(0, 600):
        assert (tiles_dir / ref.path()).read_bytes() == tile_log.read(ref, 600)
    assert (tiles_dir / "checkpoint").read_bytes() == service.checkpoint()
    # A restarted collector resumes from the checkpoint on disk: only new tiles are read.
    log.grow_to(800)
    reads = log.entry_reads
    again = TlogService(config, tile_log, direct)
    assert again.publish()
    assert log.entry_reads - reads == len([t for t in new_tiles(600, 800) if t.is_entries]) == 2
    assert (tiles_dir / "tile/entries/003.p/32").read_bytes() == tile_log.read(
        TileRef(None, 3, 32), 800
    )
    assert (
        open_checkpoint(
            (tiles_dir / "checkpoint").read_bytes(), [tile_log.signer.verifier]
        ).checkpoint.size
        == 800
    )
    assert not list(tiles_dir.rglob(".*.tmp"))
