"""The fault tests' TCP proxy: forwards, drops every connection, stalls and resumes."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.faults.tcp_proxy import TcpProxy
from tests.faults.waits import wait_until

pytestmark = pytest.mark.faults

DEADLINE_S = 10.0


class _Echo(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        while data := self.request.recv(4096):
            with self.server.lock:
                self.server.received += data
            self.request.sendall(data)
        self.server.closed.set()


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back and remembers what it received; `closed` once a peer hung up."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.received = b""
        self.lock = threading.Lock()
        self.closed = threading.Event()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", echo.server_address[1]) as p:
        yield p


def connect(proxy: TcpProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE_S)
    s.settimeout(DEADLINE_S)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """The peer ended the connection: EOF, or a reset."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def roundtrip(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    out = b""
    while len(out) < len(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


def test_forwards_both_ways(proxy: TcpProxy, echo: EchoServer) -> None:
    with connect(proxy) as s:
        assert roundtrip(s, b"ping") == b"ping"
        big = bytes(range(256)) * 1024
        assert roundtrip(s, big) == big
    assert echo.received == b"ping" + big
    assert proxy.accepted == 1


def test_drop_resets_open_connections_and_new_ones_work(proxy: TcpProxy, echo: EchoServer) -> None:
    with connect(proxy) as s:
        assert roundtrip(s, b"before") == b"before"
        assert proxy.drop() == 1
        # The client sees its connection end (EOF or reset); the upstream side hangs up too.
        assert closed_by_peer(s)
        assert echo.closed.wait(DEADLINE_S)
    with connect(proxy) as s:
        assert roundtrip(s, b"after") == b"after"
    assert proxy.accepted == 2


def test_stall_holds_bytes_with_sockets_open_until_resume(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as s:
        assert roundtrip(s, b"live") == b"live"
        proxy.stall()
        s.sendall(b"held")
        wait_until(lambda: proxy.held == 4, "the proxy to hold 4 bytes", DEADLINE_S)
        assert echo.received == b"live"  # held by the proxy, never written upstream
        with connect(proxy) as late:  # accepted during the stall, forwards nothing yet
            late.sendall(b"late")
            wait_until(lambda: proxy.held == 8, "the proxy to hold 8 bytes", DEADLINE_S)
            assert proxy.open_connections == 2
            assert echo.received == b"live"
            proxy.resume()
            assert late.recv(4) == b"late"
        assert s.recv(4) == b"held"
    assert proxy.held == 0


def test_close_ends_everything(echo: EchoServer) -> None:
    proxy = TcpProxy("127.0.0.1", echo.server_address[1])
    port = proxy.start()
    s = connect(proxy)
    assert roundtrip(s, b"x") == b"x"
    proxy.close()
    assert closed_by_peer(s)
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)


def test_upstream_down_closes_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with TcpProxy("127.0.0.1", port) as proxy, connect(proxy) as s:
        assert closed_by_peer(s)
        assert proxy.open_connections == 0
