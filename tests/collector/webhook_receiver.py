"""A webhook receiver for tests: a real HTTP server on 127.0.0.1:0 that records every POST
(the `receiver` fixture in conftest.py serves one per test)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEADLINE_S = 20.0


@dataclass
class Receiver:
    """What the test server saw; it answers `fail_first` posts with `fail_status`."""

    fail_first: int = 0
    fail_status: int = 503
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: threading.Condition = field(default_factory=threading.Condition)
    hold: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, n: int) -> None:
        with self.answered:
            assert self.answered.wait_for(lambda: len(self.posts) >= n, DEADLINE_S), self.posts


@contextmanager
def serve_receiver() -> Iterator[tuple[Receiver, str]]:
    rx = Receiver()
    rx.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rx.hold.wait(DEADLINE_S)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with rx.answered:
                rx.posts.append(({k: v for k, v in self.headers.items()}, body))
                failing = len(rx.posts) <= rx.fail_first
            self.send_response(rx.fail_status if failing else 204)
            self.end_headers()
            with rx.answered:
                rx.answered.notify_all()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rx, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        rx.hold.set()
        server.shutdown()
        server.server_close()
        thread.join()
