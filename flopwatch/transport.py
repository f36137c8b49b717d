"""gRPC channel set-up shared by the agent and the command-line clients."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from flopwatch.errors import ConfigError
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.v1 import collector_pb2_grpc

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", DEFAULT_LIMITS.max_grpc_message_bytes),
    ("grpc.max_receive_message_length", DEFAULT_LIMITS.max_grpc_message_bytes),
)


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [::1]:PORT)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def read_file(path: Path, what: str) -> bytes:
    """Read a TLS file; a missing or unreadable one is a configuration error."""
    try:
        return read_limited(path, MAX_SMALL_FILE_BYTES, what)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e


def client_credentials(
    ca: Path | None, cert: Path | None, key: Path | None
) -> grpc.ChannelCredentials:
    """mTLS credentials for a client; all three files are required."""
    if ca is None or cert is None or key is None:
        raise ConfigError("mTLS needs --tls-ca, --tls-cert and --tls-key; or pass --insecure")
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(ca, "CA certificate"),
        private_key=read_file(key, "TLS key"),
        certificate_chain=read_file(cert, "TLS certificate"),
    )


def sync_channel(
    target: str,
    *,
    insecure: bool,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> grpc.Channel:
    if insecure:
        log.warning("plaintext gRPC to %s (--insecure): nothing is authenticated", target)
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, client_credentials(ca, cert, key), options=CHANNEL_OPTIONS)


# Typed client stubs of the collector's services (the generated constructors carry no
# annotations): IngestService (agents), QueryService (dashboards, operators), LogService
# (regulators, monitors).


def ingest_stub(channel: grpc.Channel) -> collector_pb2_grpc.IngestServiceStub:
    return collector_pb2_grpc.IngestServiceStub(channel)  # type: ignore[no-untyped-call]


def query_stub(channel: grpc.Channel) -> collector_pb2_grpc.QueryServiceStub:
    return collector_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]


def log_stub(channel: grpc.Channel) -> collector_pb2_grpc.LogServiceStub:
    return collector_pb2_grpc.LogServiceStub(channel)  # type: ignore[no-untyped-call]


def collector_stub(channel: grpc.Channel) -> collector_pb2_grpc.CollectorStub:
    """DEPRECATED: the old Collector service, every RPC under one name (kept for one release,
    for collectors older than the three services above)."""
    return collector_pb2_grpc.CollectorStub(channel)  # type: ignore[no-untyped-call]
