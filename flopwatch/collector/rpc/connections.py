"""TLS connections the collector accepted, and how many of them ever carried a call.

gRPC Python tells a server nothing about a TLS handshake it refused (a client certificate from
another CA, none at all): no servicer or interceptor runs, the client only sees "Socket
closed". Two things are visible, though, and their difference is the count wanted:
  - every connection accepted on the mTLS port: gRPC asks the dynamic server credentials'
    fetcher for the certificates once per connection (`accepted`, from a gRPC thread);
  - every connection that carried a call: an interceptor sees each call's peer (IP and port)
    and counts a peer the first time (`CallPeers`).
Connections accepted that never carried a call were refused in the handshake, closed by the
connection cap or the handshake timeout, or were probes that opened TCP and left. The
collector logs their count once per period when it is not zero and exports both counters;
gRPC does not say which of these it was, nor from where.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

log = logging.getLogger(__name__)

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only
MAX_TRACKED_PEERS = 65_536  # connections remembered as having carried a call


class ConnectionStats:
    def __init__(
        self, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._interval = interval_s
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.accepted_total = 0  # connections accepted on the mTLS port
        self.used_total = 0  # connections that carried at least one call
        self._logged_at = clock()
        self._logged_unused = 0

    def accepted(self) -> None:
        """One TLS connection accepted (the credentials' fetcher, on a gRPC thread)."""
        with self._lock:
            self.accepted_total += 1

    def called(self, peer: str) -> None:
        """A call arrived from `peer` (gRPC's 'ipv4:IP:PORT'): one connection, counted once."""
        with self._lock:
            if peer in self._seen:
                self._seen.move_to_end(peer)
                return
            self._seen[peer] = None
            if len(self._seen) > MAX_TRACKED_PEERS:
                self._seen.popitem(last=False)
            self.used_total += 1

    def counts(self) -> tuple[int, int]:
        """(connections accepted, connections that carried a call)."""
        with self._lock:
            return self.accepted_total, self.used_total

    def unused(self) -> int:
        with self._lock:
            return max(0, self.accepted_total - self.used_total)

    def flush(self, *, everything: bool = False) -> None:
        """Log how many connections carried no call since the last line, once per period
        (`everything`: now, as the collector stops)."""
        now = self._clock()
        if now - self._logged_at < self._interval and not everything:
            return
        unused = self.unused()
        new = unused - self._logged_unused
        self._logged_at = now
        self._logged_unused = unused
        if new > 0:
            log.warning(
                "%d TLS connection(s) in the last %.0f s carried no call: handshakes refused "
                "(a client certificate not issued by --tls-ca, or none), the connection cap or "
                "handshake timeout, or probes; gRPC does not say which",
                new,
                self._interval,
            )

    def fetcher(self) -> Any:
        """For grpc.dynamic_ssl_server_credentials: count the connection; return None, which
        keeps the certificates."""
        self.accepted()
        return None


class CallPeers(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Tells `stats` the peer of every call, before the servicer runs."""

    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        note = self._stats.called
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind, None)
            if behavior is not None:
                wrapped = (
                    _streaming(behavior, note) if _is_stream(behavior) else _unary(behavior, note)
                )
                replace: Any = handler._replace  # type: ignore[attr-defined]
                return replace(**{kind: wrapped})  # type: ignore[no-any-return]
        return handler


def _is_stream(behavior: Callable[..., Any]) -> bool:
    return inspect.isasyncgenfunction(behavior)


def _unary(behavior: Callable[..., Any], note: Callable[[str], None]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        note(context.peer())
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


def _streaming(behavior: Callable[..., Any], note: Callable[[str], None]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        note(context.peer())
        async for response in behavior(request, context):
            yield response

    return call
