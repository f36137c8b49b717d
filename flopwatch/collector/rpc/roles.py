"""Which client role may call which RPC, checked against the peer's mTLS certificate.

    IngestService (Submit)              agent
    QueryService (ListJobs, ListRuns,   reader
      ListAccounts, ...)
    LogService (tree heads, proofs)     agent, reader: public evidence
    Collector (deprecated)              each RPC as its namesake above
    grpc.health.v1.Health, others       anyone the TLS handshake let in

Job and node listings are the operator's data, not evidence: an agent certificate (there is one
on every GPU node) cannot list every job and node. Signed tree heads and proofs prove nothing
beyond what they commit to, and agents and regulators both check against them. Roles are marked
in client certificates (`flopwatch.certs.client_roles`; unmarked: agent, as issued before roles).

`RoleInterceptor` wraps the handlers of the RPCs above: before the servicer runs, it reads the
peer certificate from the call's auth context and answers PERMISSION_DENIED, naming the role
needed, to a peer without it. It is installed only with mTLS: a plaintext (--insecure) collector
authenticates no one. Refusals are counted by method and by peer (address and certificate
fingerprint; past `max_label_values` peers, "other"), exported as flopwatch_role_denied_calls
and flopwatch_peer_role_denied_calls, and logged at most once per `DENIED_LOG_EVERY_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509

from flopwatch.certs import AGENT_ROLE, READER_ROLE, client_roles
from flopwatch.collector.labels import BoundedLabels
from flopwatch.collector.rpc.admission import peer_of
from flopwatch.v1 import collector_pb2

log = logging.getLogger(__name__)

DENIED_LOG_EVERY_S = 60.0
if TYPE_CHECKING:  # generic in the type stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
_ANY = frozenset({AGENT_ROLE, READER_ROLE})
_BY_SERVICE = {
    "IngestService": frozenset({AGENT_ROLE}),
    "QueryService": frozenset({READER_ROLE}),
    "LogService": _ANY,
}


def _method_roles() -> dict[str, frozenset[str]]:
    """Full method name ("/package.Service/Method") -> the roles that may call it."""
    services = collector_pb2.DESCRIPTOR.services_by_name
    legacy = services["Collector"]
    out: dict[str, frozenset[str]] = {}
    for name, roles in _BY_SERVICE.items():
        for method in services[name].methods:
            out[f"/{services[name].full_name}/{method.name}"] = roles
            # The deprecated Collector serves its RPCs (those older than it) under the same
            # method names.
            if method.name in legacy.methods_by_name:
                out[f"/{legacy.full_name}/{method.name}"] = roles
    return out


METHOD_ROLES: Mapping[str, frozenset[str]] = _method_roles()


def peer_roles(auth_context: Mapping[str, Any]) -> frozenset[str]:
    """The client roles of the peer certificate in a call's auth context; none without one."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return frozenset()
    try:
        return client_roles(x509.load_pem_x509_certificate(pems[0]))
    except ValueError:
        return frozenset()


class DenialStats:
    """Calls refused for want of a role, counted by method and by peer (`counts`, for metrics
    and tests). Methods are the few of `METHOD_ROLES`; peers are bounded by `max_label_values`."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_label_values: int = 1000
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.by_method: dict[str, int] = {}
        self.by_peer: dict[str, int] = {}
        self._peer_label = BoundedLabels(max_label_values)
        self._logged_at: float | None = None
        self._unlogged = 0

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Refused calls by method, and by peer."""
        with self._lock:
            return dict(self.by_method), dict(self.by_peer)

    def denied(self, method: str, peer: str, needed: frozenset[str]) -> None:
        with self._lock:
            self.by_method[method] = self.by_method.get(method, 0) + 1
            label = self._peer_label(peer)
            self.by_peer[label] = self.by_peer.get(label, 0) + 1
            self._unlogged += 1
            now = self._clock()
            if self._logged_at is not None and now - self._logged_at < DENIED_LOG_EVERY_S:
                return
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning(
            "refused %d call(s) for want of a client role; latest: %s from %s, which needs "
            "a certificate of role %s",
            count,
            method,
            peer,
            " or ".join(sorted(needed)),
        )


class RoleInterceptor(_Interceptor):
    """Refuses calls whose peer certificate lacks the role `METHOD_ROLES` names."""

    def __init__(self, stats: DenialStats | None = None) -> None:
        self.stats = stats or DenialStats()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        needed = METHOD_ROLES.get(method)
        if handler is None or needed is None:
            return handler
        return self._guard(handler, method, needed)

    async def _check(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, needed: frozenset[str]
    ) -> None:
        if peer_roles(context.auth_context()) & needed:
            return
        self.stats.denied(method, peer_of(context).key, needed)
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} needs a client certificate of role {' or '.join(sorted(needed))} "
            "(flopwatch certs issue --client --role ...)",
        )

    def _guard(self, handler: Handler, method: str, needed: frozenset[str]) -> Handler:
        # The stubs type handlers as synchronous; under grpc.aio they are coroutines.
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._check(context, method, needed)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            inner_stream: Any = handler.stream_stream

            async def stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await self._check(context, method, needed)
                async for response in inner_stream(requests, context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{method}: no guard for this kind of RPC")  # none such in the services
