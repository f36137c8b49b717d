"""Run a collector: store, ingestor, gRPC server and /metrics endpoint, from a CollectorConfig.

Transport is mTLS (client certificates required) unless the config says insecure, which logs a
warning. Port 0 in `listen` or `metrics_listen` binds a free port; `start()` reports the ports
actually bound. The store is opened, used and closed on the one ingest thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from collector.alerts import AlertSink, LogSink, ThresholdPolicy
from collector.config import CollectorConfig
from collector.ingest import Ingestor
from collector.metrics import register_metrics
from collector.servicer import CollectorServicer
from collector.sqlite_store import SQLiteStore
from collector.store import Store
from flopwatch.errors import ConfigError, StoreError
from flopwatch.transport import host_port, read_file
from flopwatch.v1 import collector_pb2_grpc

log = logging.getLogger(__name__)

# In-flight RPCs get this long to finish on shutdown before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


def sqlite_path(db: str) -> Path:
    """The file of a "sqlite:PATH" database URL."""
    scheme, sep, rest = db.partition(":")
    if scheme != "sqlite" or not sep or not rest:
        raise ConfigError(
            f"unsupported database {db!r}: use sqlite:PATH (PostgreSQL is not supported yet)"
        )
    return Path(rest)


def server_credentials(config: CollectorConfig) -> grpc.ServerCredentials | None:
    """mTLS credentials, or None for plaintext (--insecure, with a warning)."""
    if config.insecure:
        log.warning("plaintext gRPC: --insecure; the transport authenticates no one")
        return None
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        raise ConfigError("mTLS needs --tls-cert, --tls-key and --tls-ca; or pass --insecure")
    return grpc.ssl_server_credentials(
        [(read_file(config.tls_key, "TLS key"), read_file(config.tls_cert, "TLS certificate"))],
        root_certificates=read_file(config.tls_ca, "CA certificate"),
        require_client_auth=True,
    )


class CollectorService:
    """One running collector. `start()` binds and serves; `stop()` shuts down and closes."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        sinks: Sequence[AlertSink] | None = None,
    ) -> None:
        self.config = config
        self._now_ns = now_ns
        self._sinks: Sequence[AlertSink] = [LogSink()] if sinks is None else sinks
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics: tuple[WSGIServer, Thread] | None = None
        self.registry = CollectorRegistry()

    def _open(self, path: Path, policy: ThresholdPolicy) -> Ingestor:
        """Runs on the ingest thread: the store's connection belongs to it."""
        store = SQLiteStore(path, now_ns=self._now_ns)
        try:
            ingestor = Ingestor(
                store,
                policy,
                self._sinks,
                limits=self.config.limits,
                now_ns=self._now_ns,
                enroll_on_first_use=self.config.enroll_on_first_use,
            )
        except StoreError:
            store.close()
            raise
        self._store = store
        return ingestor

    async def start(self) -> tuple[int, int | None]:
        """Open the store and serve; return (gRPC port, metrics port or None)."""
        cfg = self.config
        policy = ThresholdPolicy(cfg.thresholds, cfg.alert_basis)
        path = sqlite_path(cfg.db)
        credentials = server_credentials(cfg)
        metrics_addr = host_port(cfg.metrics_listen) if cfg.metrics_listen else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flopwatch-ingest")
        loop = asyncio.get_running_loop()
        try:
            ingestor = await loop.run_in_executor(self._executor, self._open, path, policy)
            port = await self._start_grpc(ingestor, credentials)
            metrics_port = None
            if metrics_addr is not None:
                register_metrics(self.registry, ingestor.snapshot, policy.thresholds)
                metrics_port = self._start_metrics(*metrics_addr)
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info("collector serving gRPC on port %d, metrics on %s", port, metrics_port)
        return port, metrics_port

    async def _start_grpc(
        self, ingestor: Ingestor, credentials: grpc.ServerCredentials | None
    ) -> int:
        assert self._executor is not None
        limits = self.config.limits
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.max_grpc_message_bytes),
                ("grpc.so_reuseport", 0),  # a second collector on the same port must fail
            ]
        )
        servicer = CollectorServicer(ingestor, self._executor, limits=limits)
        collector_pb2_grpc.add_CollectorServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, self._server
        )
        try:
            if credentials is None:
                port = self._server.add_insecure_port(self.config.listen)
            else:
                port = self._server.add_secure_port(self.config.listen, credentials)
        except RuntimeError as e:
            raise ConfigError(f"cannot listen on {self.config.listen}: {e}") from e
        if port == 0:
            raise ConfigError(f"cannot listen on {self.config.listen}")
        await self._server.start()
        return port

    def _start_metrics(self, host: str, port: int) -> int:
        try:
            self._metrics = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror}") from e
        return int(self._metrics[0].server_port)

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop serving (in-flight RPCs get `grace` seconds), then close the store."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._metrics is not None:
            httpd, thread = self._metrics
            self._metrics = None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
            thread.join()
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            if self._store is not None:
                # Queued behind any ingest still running, on the thread that owns the store.
                await loop.run_in_executor(self._executor, self._store.close)
                self._store = None
            self._executor.shutdown(wait=True)
            self._executor = None


async def run_collector(
    config: CollectorConfig,
    *,
    ready: Callable[[int, int | None], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or the task is cancelled); then shut down cleanly.

    `ready(grpc_port, metrics_port)` is called once both are bound. Signal handling is the
    caller's: set `stop` from a SIGTERM handler.
    """
    service = CollectorService(config)
    grpc_port, metrics_port = await service.start()
    try:
        if ready is not None:
            ready(grpc_port, metrics_port)
        await (stop or asyncio.Event()).wait()
    finally:
        await service.stop()
