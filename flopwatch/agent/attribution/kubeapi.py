"""A small client of the Kubernetes API server: GET, paged LIST and WATCH of object metadata,
over HTTPS with the pod's service account, without a client library.

In a pod (`in_cluster`): the API server at https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT,
its CA in /var/run/secrets/kubernetes.io/serviceaccount/ca.crt and the service account token
beside it, read again every TOKEN_REREAD_S (the kubelet rotates bound tokens, which expire).
Elsewhere (tests, `kubectl proxy`): any http(s) URL, with an optional token and CA file.

Only metadata is asked for (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;
v=v1`), as client-go's metadata informers do: a pod's labels, annotations and ownerReferences,
not its spec. A server that does not offer that form answers the full object, read the same way.

Bounded, whatever the server does: a request connects and answers completely within
`timeout_s` (a watch within its timeoutSeconds plus `timeout_s`, then it ends); an answer longer
than MAX_RESPONSE_BYTES, or a watch event longer than MAX_EVENT_BYTES, is refused, as is one
that is not the JSON the API documents. Every failure is an ApiError (a TransportError) that
carries the HTTP status where the server gave one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flopwatch
from flopwatch.errors import ConfigError, TransportError
from flopwatch.identifiers import shown
from flopwatch.reads import read_limited

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_RESPONSE_BYTES = 16 << 20  # one GET answer or LIST page
MAX_EVENT_BYTES = 4 << 20  # one watch event (etcd holds objects of at most ~1.5 MiB)
MAX_ERROR_BYTES = 64 << 10  # the body of an answer that is not 200, read for its message
MAX_LIST_ITEMS = 20_000  # objects one LIST may return, over all its pages
LIST_PAGE = 500  # objects asked for per LIST page (`limit`)
DEFAULT_TIMEOUT_S = 10.0  # one request: connect and complete answer
TOKEN_REREAD_S = 60.0  # the service account token file is read again after this long
_READ_CHUNK = 64 << 10

METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(TransportError):
    """The API server did not answer as documented. `status`: the HTTP status (410: the
    resource version asked for is gone), or None where no answer came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApiSettings:
    """Where the API server is and how to authenticate to it."""

    url: str  # http(s)://HOST:PORT[/PREFIX]
    token_file: Path | None = None  # a bearer token, read again every TOKEN_REREAD_S
    ca_file: Path | None = None  # the CA of an https server; None: the system's CAs
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_event_bytes: int = MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--k8s-api {shown(self.url)!r}: use an http(s)://HOST:PORT URL")
        if parts.query or parts.fragment:
            raise ConfigError(f"--k8s-api {shown(self.url)!r}: no query or fragment")
        if not self.timeout_s > 0:
            raise ConfigError("the Kubernetes API timeout must be positive")


def in_cluster(
    environ: Mapping[str, str] = os.environ, directory: Path = SERVICE_ACCOUNT_DIR
) -> ApiSettings | None:
    """The API server of the cluster this pod runs in, or None outside a pod (no
    KUBERNETES_SERVICE_HOST, or no service account token)."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = directory / "token"
    if not host or not token.is_file():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca = directory / "ca.crt"
    return ApiSettings(f"https://{host}:{port}", token_file=token, ca_file=ca)


def _status_message(body: bytes) -> str:
    """The message of a Status object the API answers errors with, else the start of the body."""
    try:
        status = json.loads(body)
    except (ValueError, RecursionError):
        status = None
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return shown(status["message"][:300])
    return shown(body[:200].decode(errors="replace"))


def parse_json(data: bytes | bytearray, what: str) -> dict[str, Any]:
    """A JSON object, or ApiError."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ApiError(f"{what}: not JSON ({shown(str(e))[:100]})") from None
    if not isinstance(value, dict):
        raise ApiError(f"{what}: not a JSON object")
    return value


class _Stream:
    """One open response: its body read within a deadline, whatever the server sends."""

    def __init__(
        self, conn: http.client.HTTPConnection, sock: socket.socket | None, deadline: float
    ) -> None:
        self.conn = conn
        self.sock = sock
        self.deadline = deadline
        self.response: http.client.HTTPResponse | None = None

    def read1(self) -> bytes:
        """Some bytes of the body (empty at its end); TimeoutError past the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        if self.sock is not None:
            self.sock.settimeout(left)
        assert self.response is not None
        return self.response.read1(_READ_CHUNK)

    def interrupt(self) -> None:
        """Wake a read blocked on this stream (from another thread): it ends."""
        if self.sock is not None:
            with contextlib.suppress(OSError):  # already closed
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        self.conn.close()


class WatchStream:
    """The events of one watch, in order, until the server ends it or its time is up."""

    def __init__(self, stream: _Stream, what: str, max_event_bytes: int) -> None:
        self._stream = stream
        self._what = what
        self._max = max_event_bytes

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buf = bytearray()
        scanned = 0
        try:
            while True:
                newline = buf.find(b"\n", scanned)
                if newline > self._max or (newline < 0 and len(buf) > self._max):
                    raise ApiError(f"{self._what}: a watch event longer than {self._max} bytes")
                if newline >= 0:
                    line = bytes(buf[:newline])
                    del buf[: newline + 1]
                    scanned = 0
                    if line.strip():
                        yield self._event(line)
                    continue
                scanned = len(buf)
                try:
                    data = self._stream.read1()
                except TimeoutError:
                    return  # the watch's time is up: the caller watches again from where it was
                except (OSError, http.client.HTTPException) as e:
                    raise ApiError(f"{self._what}: watch broken: {shown(str(e))}") from None
                if not data:
                    if buf.strip():
                        yield self._event(bytes(buf))
                    return
                buf += data
        finally:
            self._stream.close()

    def _event(self, line: bytes) -> dict[str, Any]:
        event = parse_json(line, f"{self._what}: watch event")
        if not isinstance(event.get("type"), str) or not isinstance(event.get("object"), dict):
            raise ApiError(f"{self._what}: a watch event without type and object")
        return event

    def interrupt(self) -> None:
        """End the watch from another thread."""
        self._stream.interrupt()


class KubeApi:
    """GET, LIST and WATCH against one API server. Not thread-safe: one per thread."""

    def __init__(self, settings: ApiSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        parts = urllib.parse.urlsplit(settings.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._clock = clock
        self._context: ssl.SSLContext | None = None
        if self._https:
            cafile = str(settings.ca_file) if settings.ca_file is not None else None
            try:
                self._context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"Kubernetes API CA {cafile}: {e}") from e
        self._token = ""
        self._token_read_at: float | None = None

    def _bearer(self) -> str:
        path = self.settings.token_file
        if path is None:
            return ""
        now = self._clock()
        if self._token_read_at is None or now - self._token_read_at >= TOKEN_REREAD_S:
            try:
                self._token = read_limited(path, 64 << 10, "service account token").decode(
                    "ascii", errors="replace"
                )
            except (ConfigError, OSError) as e:
                if not self._token:
                    raise ApiError(f"service account token {path}: {e}") from None
                log.warning("service account token %s: %s; using the last one read", path, e)
            self._token_read_at = now
        token = self._token.strip()
        if not (token.isascii() and token.isprintable()):
            raise ApiError(f"service account token {path}: not printable ASCII")
        return token

    def _url(self, path: str, params: Mapping[str, str]) -> str:
        query = urllib.parse.urlencode(sorted(params.items()))
        return self._prefix + path + (f"?{query}" if query else "")

    def _open(self, path: str, params: Mapping[str, str], accept: str, seconds: float) -> _Stream:
        what = f"Kubernetes API {path}"
        deadline = time.monotonic() + seconds
        conn: http.client.HTTPConnection
        timeout = self.settings.timeout_s
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        headers = {"Accept": accept, "User-Agent": f"flopwatch-agent/{flopwatch.__version__}"}
        stream = _Stream(conn, None, deadline)
        try:
            token = self._bearer()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request("GET", self._url(path, params), headers=headers)
            stream.sock = conn.sock  # kept: a response that closes the connection takes it over
            stream.response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            stream.close()
            raise ApiError(f"{what}: {shown(str(e)) or type(e).__name__}") from None
        except ApiError:
            stream.close()
            raise
        status = stream.response.status
        if status != 200:
            try:
                body = self._read(stream, MAX_ERROR_BYTES, what, cut=True)
            except ApiError:
                body = b""
            stream.close()
            raise ApiError(f"{what}: HTTP {status}: {_status_message(body)}", status)
        return stream

    def _read(self, stream: _Stream, limit: int, what: str, *, cut: bool = False) -> bytes:
        """The whole body, at most `limit` bytes (`cut`: the first `limit` bytes of a longer
        one), before the stream's deadline."""
        assert stream.response is not None
        length = stream.response.getheader("Content-Length")
        if not cut and length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(f"{what}: an answer of {length} bytes, more than {limit}")
        body = bytearray()
        try:
            while True:
                data = stream.read1()
                if not data:
                    return bytes(body)
                body += data
                if len(body) > limit:
                    if cut:
                        return bytes(body[:limit])
                    raise ApiError(f"{what}: an answer longer than {limit} bytes")
        except TimeoutError:
            raise ApiError(
                f"{what}: no complete answer within {self.settings.timeout_s:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise ApiError(f"{what}: {shown(str(e)) or type(e).__name__}") from None

    def get(
        self, path: str, params: Mapping[str, str] | None = None, *, accept: str = METADATA
    ) -> dict[str, Any]:
        """The JSON object at `path` (an API path such as /api/v1/namespaces/NS/pods/NAME)."""
        what = f"Kubernetes API {path}"
        stream = self._open(path, params or {}, accept, self.settings.timeout_s)
        try:
            body = self._read(stream, self.settings.max_response_bytes, what)
        finally:
            stream.close()
        return parse_json(body, what)

    def list(
        self, path: str, params: Mapping[str, str], *, max_items: int = MAX_LIST_ITEMS
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of a collection (paged by `limit` and `continue`) and the list's
        resourceVersion, to watch from."""
        what = f"Kubernetes API {path}"
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {**params, "limit": str(LIST_PAGE)}
            if token:
                query["continue"] = token
            page = self.get(path, query, accept=METADATA_LIST)
            found, meta = page.get("items"), page.get("metadata")
            if not isinstance(found, list) or not isinstance(meta, dict):
                raise ApiError(f"{what}: a list without items and metadata")
            items.extend(i for i in found if isinstance(i, dict))
            if len(items) > max_items:
                raise ApiError(f"{what}: more than {max_items} objects")
            version, token = meta.get("resourceVersion"), meta.get("continue") or ""
            if not isinstance(version, str) or not version or not isinstance(token, str):
                raise ApiError(f"{what}: a list without a resourceVersion")
            if not token:
                return items, version

    def watch(self, path: str, params: Mapping[str, str], *, timeout_s: float) -> WatchStream:
        """Open a watch of the collection at `path` from params["resourceVersion"]; the server
        ends it after `timeout_s` (timeoutSeconds), and so does this client, `timeout_s` plus
        the request timeout later, whatever the server does."""
        seconds = max(1, int(timeout_s))
        query = {
            **params,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        stream = self._open(path, query, METADATA, seconds + self.settings.timeout_s)
        return WatchStream(stream, f"Kubernetes API {path}", self.settings.max_event_bytes)
