"""The collector's gRPC services on one server, and the deprecated `Collector` service.

    flopwatch.v1.IngestService  rpc/ingest.py  agents stream signed envelopes
    flopwatch.v1.QueryService   rpc/query.py   dashboards and operators read totals
    flopwatch.v1.LogService     rpc/tlog.py    regulators and monitors read the transparency log
    flopwatch.v1.Collector      here           DEPRECATED: the three above under one name

`Collector` stays registered for one release, for agents and tools already deployed (which call
`/flopwatch.v1.Collector/Submit`). It has no code of its own: each of its RPCs is served by the
very method of its namesake in the three services (same ingest pipeline, same store thread), so
old and new names answer alike, byte for byte.
"""

from __future__ import annotations

import grpc

from flopwatch.collector.rpc.ingest import PUBLIC_KEY_METADATA, IngestServicer
from flopwatch.collector.rpc.query import QueryServicer
from flopwatch.collector.rpc.tlog import LogServicer
from flopwatch.v1 import collector_pb2, collector_pb2_grpc

__all__ = [
    "LEGACY_SERVICE",
    "PUBLIC_KEY_METADATA",
    "SERVICES",
    "CollectorServicer",
    "add_services",
]


def _full_name(service: str) -> str:
    return str(collector_pb2.DESCRIPTOR.services_by_name[service].full_name)


INGEST_SERVICE = _full_name("IngestService")
QUERY_SERVICE = _full_name("QueryService")
LOG_SERVICE = _full_name("LogService")
SERVICES = (INGEST_SERVICE, QUERY_SERVICE, LOG_SERVICE)
LEGACY_SERVICE = _full_name("Collector")


class CollectorServicer:
    """DEPRECATED `flopwatch.v1.Collector`: the three services' own RPC methods under the old
    service name (to be removed in the next release)."""

    def __init__(self, ingest: IngestServicer, query: QueryServicer, log: LogServicer) -> None:
        self.Submit = ingest.Submit
        self.ListJobs = query.ListJobs
        self.ListJobGpus = query.ListJobGpus
        self.ListNodes = query.ListNodes
        self.GetTreeHead = log.GetTreeHead
        self.GetInclusionProof = log.GetInclusionProof
        self.GetConsistencyProof = log.GetConsistencyProof


def add_services(
    server: grpc.aio.Server, ingest: IngestServicer, query: QueryServicer, log: LogServicer
) -> None:
    """Register IngestService, QueryService, LogService and the deprecated Collector."""
    collector_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)  # type: ignore[no-untyped-call]
    collector_pb2_grpc.add_QueryServiceServicer_to_server(query, server)  # type: ignore[no-untyped-call]
    collector_pb2_grpc.add_LogServiceServicer_to_server(log, server)  # type: ignore[no-untyped-call]
    collector_pb2_grpc.add_CollectorServicer_to_server(  # type: ignore[no-untyped-call]
        CollectorServicer(ingest, query, log), server
    )
