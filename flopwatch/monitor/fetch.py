"""Reading a collector's tlog-tiles over HTTP(S): the checkpoint, tiles and entry bundles.

One persistent connection per log (HTTPS verified against the given CA, or the system's), a
bearer token or a client certificate, and bounds on everything: a timeout per request, the
bytes of an answer (a checkpoint, a tile, a bundle: gzip is accepted and inflated no further
than the bound). Redirects are not followed. A partial tile or bundle that is not served (a
server may keep only full ones once they exist) is read from the full one. Every failure is a
TransportError saying what (a malformed tile is the caller's to find: `tree_tiles`).
"""

from __future__ import annotations

import http.client
import ssl
import stat
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path

from flopwatch.errors import ConfigError, TransportError, VerificationError
from flopwatch.merkle import HASH_SIZE
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.tlog.note import MAX_NOTE_BYTES
from flopwatch.tlog.tiles import TILE_WIDTH, TileRef, decode_bundle, encode_bundle

MIN_TOKEN_BYTES = 16


def load_token(path: Path) -> bytes:
    """A bearer token file: owner-only mode, at least 16 printable bytes."""
    try:
        mode = path.stat().st_mode
        data = read_limited(path, MAX_SMALL_FILE_BYTES, "tiles token").strip()
    except OSError as e:
        raise ConfigError(f"cannot read the tiles token {path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"tiles token {path} must be readable by its owner only (chmod 600)")
    if len(data) < MIN_TOKEN_BYTES or not data.isascii() or any(c <= 32 for c in data):
        raise ConfigError(f"tiles token {path} must be at least {MIN_TOKEN_BYTES} printable bytes")
    return data


def client_tls(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """TLS to the log: its certificate verified against `ca` (or the system's CAs), and a
    client certificate for mTLS when given."""
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert), None if key is None else str(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot set up TLS to the log: {e}") from e
    return context


# TLS alerts a log answers a client certificate with (OpenSSL's reasons), and what they mean.
_NO_CLIENT_CERT = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
_CLIENT_CERT_REFUSED = {
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_DECRYPT_ERROR",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "TLSV1_ALERT_ACCESS_DENIED",
}


def tls_refusal(e: ssl.SSLError) -> str:
    """What a TLS failure with the log means for this monitor's configuration."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return "the log's certificate does not verify against ca_file (or the system's CAs)"
    if e.reason in _NO_CLIENT_CERT:
        return (
            "the log requires a client certificate: give client_cert and client_key (a reader "
            "certificate of the log's CA) or a token_file"
        )
    if e.reason in _CLIENT_CERT_REFUSED:
        return (
            "the log refused this monitor's client certificate (is it issued by the log's CA, "
            "and current?)"
        )
    if isinstance(e, ssl.SSLEOFError):  # TLS 1.3: the refusal may arrive as a closed connection
        return (
            "the log closed the TLS connection: did it refuse this monitor's client certificate "
            "(none, not of its CA, or expired)?"
        )
    return "TLS with the log failed"


@dataclass(frozen=True)
class FetchLimits:
    timeout_s: float = 30.0
    max_entry_bytes: int = 0xFFFF  # the tlog-tiles bound; a lower one refuses larger entries

    @property
    def max_bundle_bytes(self) -> int:
        return TILE_WIDTH * (2 + self.max_entry_bytes)


class TileFetcher:
    """GETs under a log's tiles URL (`https://host/prefix/` + `checkpoint`, `tile/...`)."""

    def __init__(
        self,
        url: str,
        *,
        token: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        limits: FetchLimits = FetchLimits(),
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"a log's tiles URL is http(s)://HOST[:PORT]/[PREFIX/], not {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"a log's tiles URL has no query or fragment: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError as e:
            raise ConfigError(f"a log's tiles URL has a bad port: {url!r}") from e
        self._prefix = parts.path.rstrip("/") + "/"
        self._token = token
        self._tls = tls if tls is not None else (client_tls(None) if self._https else None)
        self.limits = limits
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.bytes_read = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            t = self.limits.timeout_s
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=t, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=t)
        return self._conn

    def get(self, path: str, limit: int) -> bytes | None:
        """The body at `path` (at most `limit` bytes once inflated); None for 404."""
        headers = {"Accept-Encoding": "gzip", "User-Agent": "flopwatch-monitor"}
        if self._token is not None:
            headers["Authorization"] = "Bearer " + self._token.decode("ascii")
        for attempt in range(2):  # once more on a kept-alive connection the server closed
            conn = self._connection()
            try:
                conn.request("GET", self._prefix + path, headers=headers)
                response = conn.getresponse()
                status = response.status
                encoding = (response.getheader("Content-Encoding") or "").lower()
                body = response.read(limit + 1)
                if not response.isclosed() or response.will_close:  # unread rest, or closing
                    self.close()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 0:
                    continue
                raise TransportError(f"GET {path}: {e}") from e
            except ssl.SSLError as e:
                self.close()
                raise TransportError(f"GET {path}: {tls_refusal(e)} ({e})") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise TransportError(f"GET {path}: {e}") from e
            self.requests += 1
            self.bytes_read += len(body)
            return self._body(path, status, encoding, body, limit)
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, path: str, status: int, encoding: str, body: bytes, limit: int) -> bytes | None:
        if status == 404:
            return None
        if status != 200:
            text = body[:200].decode("utf-8", "replace").strip()
            raise TransportError(f"GET {path}: HTTP {status}: {text!r}")
        if encoding == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = d.decompress(body, limit + 1)
            except zlib.error as e:
                raise TransportError(f"GET {path}: bad gzip: {e}") from e
            if not d.eof and len(body) <= limit:
                raise TransportError(f"GET {path}: gzip body is cut short")
        elif encoding not in ("", "identity"):
            raise TransportError(f"GET {path}: unknown Content-Encoding {encoding[:40]!r}")
        if len(body) > limit:
            raise TransportError(f"GET {path}: answer over {limit} bytes")
        return body

    def checkpoint(self) -> bytes:
        body = self.get("checkpoint", MAX_NOTE_BYTES)
        if body is None:
            raise TransportError("GET checkpoint: 404, the log has published none")
        return body

    def fetch(self, ref: TileRef) -> bytes:
        """The bytes of exactly `ref` (a partial one cut from the full one if need be)."""
        limit = self.limits.max_bundle_bytes if ref.is_entries else TILE_WIDTH * HASH_SIZE
        body = self.get(ref.path(), limit)
        if body is None and not ref.full:
            full = TileRef(ref.level, ref.index)
            body = self.get(full.path(), limit)
            if body is not None:
                return _cut(body, ref)
        if body is None:
            raise TransportError(f"GET {ref.path()}: 404")
        return body


def _cut(full: bytes, ref: TileRef) -> bytes:
    """The first `ref.width` hashes or entries of a full tile or bundle."""
    if not ref.is_entries:
        return full[: ref.width * HASH_SIZE] if len(full) == TILE_WIDTH * HASH_SIZE else full
    try:
        return encode_bundle(decode_bundle(full, TILE_WIDTH)[: ref.width])
    except VerificationError:  # a malformed full bundle: the caller's decode refuses it
        return full
