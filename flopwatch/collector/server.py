"""Run a collector: store, ingestor, gRPC server and /metrics endpoint, from a CollectorConfig.

The gRPC server carries IngestService, QueryService, LogService, the deprecated Collector
(`flopwatch.collector.rpc.servicer`) and grpc.health.v1.Health (`flopwatch.collector.rpc.health`:
SERVING once the store is open and the server started, NOT_SERVING from the start of `stop()`).
With `health_listen`, a second, plaintext gRPC server carries Health alone, for probes that
cannot present a client certificate.

Transport is mTLS (client certificates required) unless the config says insecure, which logs a
warning. Port 0 in `listen`, `metrics_listen` or `health_listen` binds a free port; `start()`
reports the ports actually bound (`health_port` the health port's). The store (`--db`: SQLite,
or PostgreSQL shared by several collectors; see `flopwatch.collector.store.factory`) is opened,
used and closed on the one ingest thread. Alerts go to the log and, when configured, a webhook
(`flopwatch.collector.alerts.webhook`); silent nodes are looked for every `liveness_check_s` on
the ingest thread (`flopwatch.collector.alerts.liveness`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from threading import Thread
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from flopwatch.collector.alerts.events import AlertSink, LogSink, ThresholdPolicy
from flopwatch.collector.alerts.liveness import LivenessMonitor
from flopwatch.collector.alerts.webhook import WebhookSink, load_secret
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.ingest.workers import VerifyWorkers
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.collector.log.tlog_service import TlogService, start_tlog
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.query import Query
from flopwatch.collector.rpc.health import Health
from flopwatch.collector.rpc.ingest import IngestServicer
from flopwatch.collector.rpc.query import QueryServicer
from flopwatch.collector.rpc.servicer import LEGACY_SERVICE, SERVICES, add_services
from flopwatch.collector.rpc.tlog import LogServicer
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import Database, open_store, parse_db
from flopwatch.errors import ConfigError, FlopwatchError, StoreError
from flopwatch.transport import host_port, read_file
from flopwatch.verify.record import VerifiedRecord

log = logging.getLogger(__name__)

# In-flight RPCs get this long to finish on shutdown before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


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
        self._sinks: list[AlertSink] = [LogSink()] if sinks is None else list(sinks)
        self._webhook: WebhookSink | None = None
        self._watch: asyncio.Task[None] | None = None
        self._log: TransparencyLog | None = None  # the transparency log, on the store's thread
        self._signing: asyncio.Task[None] | None = None
        self.tlog: TlogService | None = None  # checkpoints, tiles, witnesses (config.tlog)
        self._publishing: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._workers: VerifyWorkers | None = None
        self._ingest: IngestServicer | None = None
        self._store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Health | None = None
        self._health_server: grpc.aio.Server | None = None  # the plaintext port of Health alone
        self.health_port: int | None = None  # bound by start() when health_listen is set
        self._metrics: tuple[WSGIServer, Thread] | None = None
        self.registry = CollectorRegistry()

    def _open(self, db: Database, policy: ThresholdPolicy) -> Ingestor:
        """Runs on the ingest thread: the store's connection belongs to it."""
        store = open_store(db, now_ns=self._now_ns)
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
        db = parse_db(cfg.db)
        credentials = server_credentials(cfg)
        metrics_addr = host_port(cfg.metrics_listen) if cfg.metrics_listen else None
        if cfg.webhook is not None:
            secret_file = cfg.webhook.secret_file
            secret = None if secret_file is None else load_secret(secret_file)
            self._webhook = WebhookSink(cfg.webhook, secret=secret)
            self._sinks.append(self._webhook)
        log_key = load_collector_key(cfg.log_key or default_key_path(cfg.db), create=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flopwatch-ingest")
        loop = asyncio.get_running_loop()
        try:
            if cfg.verify_workers > 0:
                self._workers = await asyncio.to_thread(
                    VerifyWorkers, cfg.verify_workers, cfg.limits
                )
                log.info("verifying records in %d worker processes", cfg.verify_workers)
            ingestor = await loop.run_in_executor(self._executor, self._open, db, policy)
            assert self._store is not None
            self._log = TransparencyLog(self._store, log_key, now_ns=self._now_ns)
            query = Query(self._store, silent_after_s=cfg.silent_after_s, now_ns=self._now_ns)
            liveness = LivenessMonitor(
                self._store, self._sinks, silent_after_s=cfg.silent_after_s, now_ns=self._now_ns
            )
            port = await self._start_grpc(ingestor, credentials, query)
            if cfg.health_listen is not None:
                self.health_port = await self._start_health_port(cfg.health_listen)
            assert self._health is not None
            await self._health.serving()
            metrics_port = None
            if metrics_addr is not None:
                register_metrics(
                    self.registry,
                    ingestor.snapshot,
                    policy.thresholds,
                    liveness=liveness.snapshot,
                    webhook=None if self._webhook is None else self._webhook.stats,
                )
                metrics_port = self._start_metrics(*metrics_addr)
            self._watch = asyncio.create_task(self._watch_liveness(liveness))
            self._signing = asyncio.create_task(self._sign_tree_heads())
            if cfg.tlog is not None:
                self.tlog = start_tlog(cfg, self._store, log_key, self._executor)
                self._publishing = asyncio.create_task(self._publish_checkpoints(self.tlog))
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info(
            "collector serving gRPC on port %d, metrics on %s, plaintext health on %s",
            port,
            metrics_port,
            self.health_port,
        )
        return port, metrics_port

    async def _watch_liveness(self, monitor: LivenessMonitor) -> None:
        """Look for silent nodes now and every liveness_check_s (at most half the silence
        timeout), on the ingest thread."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, monitor.check)
            except StoreError as e:  # the next check tries again
                log.error("cannot check for silent nodes: %s", e)
            await asyncio.sleep(min(self.config.liveness_check_s, self.config.silent_after_s / 2))

    async def _sign_tree_heads(self) -> None:
        """Sign a tree head of the log now and every tree_head_interval_s, if it grew."""
        assert self._executor is not None and self._log is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self._log.sign)
            except StoreError as e:  # the next round tries again
                log.error("cannot sign a tree head: %s", e)
            await asyncio.sleep(self.config.tree_head_interval_s)

    async def _publish_checkpoints(self, tlog: TlogService) -> None:
        """Checkpoint, witness and publish the log now and every checkpoint_interval_s."""
        assert self.config.tlog is not None
        while True:
            try:
                await asyncio.to_thread(tlog.publish)
            except FlopwatchError as e:  # the next round tries again
                log.error("cannot publish a checkpoint: %s", e)
            await asyncio.sleep(self.config.tlog.checkpoint_interval_s)

    async def _stop_tlog(self) -> None:
        if self._publishing is not None:
            self._publishing.cancel()
            await asyncio.wait([self._publishing])
            self._publishing = None
        if self.tlog is not None:
            await asyncio.to_thread(self.tlog.close)
            self.tlog = None

    async def _start_grpc(
        self, ingestor: Ingestor, credentials: grpc.ServerCredentials | None, query: Query
    ) -> int:
        assert self._executor is not None and self._log is not None
        limits = self.config.limits
        self._server = _grpc_server(limits.max_grpc_message_bytes)
        self._ingest = IngestServicer(
            ingestor,
            self._executor,
            limits=limits,
            verify=self._verify_ahead if self._workers is not None else None,
        )
        add_services(
            self._server,
            self._ingest,
            QueryServicer(
                query, self._executor, basis=ingestor.policy.basis, limits=self.config.query
            ),
            LogServicer(self._log, self._executor),
        )
        self._health = await Health.not_serving((*SERVICES, LEGACY_SERVICE))
        self._health.add_to(self._server)
        port = _bind(self._server, self.config.listen, credentials)
        await self._server.start()
        return port

    async def _start_health_port(self, listen: str) -> int:
        """A plaintext server of Health alone: it tells whether the collector serves, no more."""
        assert self._health is not None
        self._health_server = _grpc_server(self.config.limits.max_grpc_message_bytes)
        self._health.add_to(self._health_server)
        port = _bind(self._health_server, listen, None)
        await self._health_server.start()
        return port

    def _verify_ahead(
        self, items: Sequence[tuple[bytes, bytes | None]]
    ) -> list[VerifiedRecord | None]:
        assert self._workers is not None
        return self._workers.verify(items, self._now_ns())

    def _start_metrics(self, host: str, port: int) -> int:
        try:
            self._metrics = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror}") from e
        return int(self._metrics[0].server_port)

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Report NOT_SERVING, stop serving (in-flight RPCs get `grace` seconds), then close the
        store."""
        if self._health is not None:
            await self._health.shutdown()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait([self._watch])
            self._watch = None
        if self._signing is not None:
            self._signing.cancel()
            await asyncio.wait([self._signing])
            self._signing = None
        await self._stop_tlog()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(grace)
            self._health_server = None
        self._health = None
        if self._ingest is not None:
            await self._ingest.close()
            self._ingest = None
        if self._workers is not None:
            await asyncio.to_thread(self._workers.close)
            self._workers = None
        if self._metrics is not None:
            httpd, thread = self._metrics
            self._metrics = None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
            thread.join()
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            if self._log is not None:  # a last head, covering every record acked
                try:
                    await loop.run_in_executor(self._executor, self._log.sign)
                except StoreError as e:
                    log.error("cannot sign the last tree head: %s", e)
                self._log = None
            if self._store is not None:
                # Queued behind any ingest still running, on the thread that owns the store.
                await loop.run_in_executor(self._executor, self._store.close)
                self._store = None
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._webhook is not None:
            await asyncio.to_thread(self._webhook.close)
            self._webhook = None


def _grpc_server(max_message_bytes: int) -> grpc.aio.Server:
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second collector on the same port must fail
        ]
    )


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add `listen` to `server` (plaintext without credentials); the port bound."""
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {listen}: {e}") from e
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}")
    return port


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
