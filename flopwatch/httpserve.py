"""A small, bounded HTTP(S) server on a thread: what the tile server and the witness run on.

Bounds an outside party could otherwise push (named in `HttpLimits`): connections served at
once (more are closed at accept), seconds a connection may stay idle or take to send a request,
and request body bytes (a handler reads at most `max_body_bytes`). TLS, when given a context,
is negotiated on the connection's own thread, so a client that stalls its handshake holds one
slot until the timeout and never the accept loop.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flopwatch.errors import ConfigError
from flopwatch.transport import host_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 64
    timeout_s: float = 30.0  # per connection: the TLS handshake, each request, idle keep-alive
    max_body_bytes: int = 128 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: HttpLimits,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.limits = limits
        self.tls = tls
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning(
                "HTTP connection from %s refused: %d open",
                client_address,
                self.limits.max_connections,
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.limits.timeout_s)
            if self.tls is not None:
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    log.info("TLS handshake with %s failed: %s", client_address, e)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HttpService:
    """A server bound at construction, serving on a daemon thread until `close()`."""

    def __init__(
        self,
        listen: str,
        handler: type[BaseHTTPRequestHandler],
        *,
        limits: HttpLimits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host, port = host_port(listen)
        try:
            self._server = _Server((host, port), handler, limits or HttpLimits(), tls)
        except OSError as e:
            raise ConfigError(f"cannot listen on {listen}: {e.strerror}") from e
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def server_tls(cert: Path, key: Path, ca: Path | None, *, require_client: bool) -> ssl.SSLContext:
    """A TLS server context; with `ca`, client certificates are checked against it (required
    when `require_client`, else optional: the handler then sees whether one was presented)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ConfigError(f"cannot load the TLS certificate, key or CA: {e}") from e
    return ctx


def peer_certificate(handler: BaseHTTPRequestHandler) -> bool:
    """Whether the connection presented a client certificate the CA verified."""
    conn = handler.connection
    return isinstance(conn, ssl.SSLSocket) and bool(conn.getpeercert())


class BoundedHandler(BaseHTTPRequestHandler):
    """A handler that answers in full, reads bounded bodies, and logs at DEBUG only."""

    protocol_version = "HTTP/1.1"
    server_version = "flopwatch"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413 for a missing or too large one."""
        limit = int(self.server.limits.max_body_bytes)  # type: ignore[attr-defined]
        text = self.headers.get("Content-Length")
        if text is None or not text.isdigit():
            self.answer(411, b"a Content-Length is required\n")
            return None
        if int(text) > limit:
            self.answer(413, f"the body is over {limit} bytes\n".encode(), close=True)
            return None
        return self.rfile.read(int(text))

    def answer(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        close: bool = False,
        head_only: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
