"""The standard `grpc.health.v1.Health` service (grpcio-health-checking), for Kubernetes gRPC
probes and load balancers.

NOT_SERVING until `serving()` (the collector calls it once the store is open and the server
started), NOT_SERVING for good from `shutdown()` on (called before the servers stop, so probes
see the collector going away while in-flight RPCs drain). The status is kept for the server as a
whole (service "") and for each service named. One `Health` may be added to several servers:
the main port (mTLS) and the plaintext health port share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEALTH_SERVICE = str(health.SERVICE_NAME)  # grpc.health.v1.Health
OVERALL = str(health.OVERALL_HEALTH)  # "": the server as a whole


class Health:
    """Build with `await Health.not_serving(services)`."""

    def __init__(self, services: Sequence[str]) -> None:
        # grpc-stubs types only the synchronous servicer; this is its asyncio twin.
        self._servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._services = (OVERALL, *services)

    @classmethod
    async def not_serving(cls, services: Sequence[str]) -> Health:
        """A health service reporting NOT_SERVING for the server and each of `services`."""
        self = cls(services)
        for service in self._services:
            await self._servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        return self

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        """SERVING for the server and each service (unless `shutdown` came first)."""
        for service in self._services:
            await self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self) -> None:
        """NOT_SERVING for every service, from now on (later `serving` calls change nothing)."""
        await self._servicer.enter_graceful_shutdown()
