"""Run a collector: store, ingestor, gRPC server and /metrics endpoint, from a CollectorConfig.

The gRPC server carries IngestService, QueryService, LogService, the deprecated Collector
(`flopwatch.collector.rpc.servicer`) and grpc.health.v1.Health (`flopwatch.collector.rpc.health`:
SERVING once the store is open and the server started, NOT_SERVING from the start of `stop()`).
With `health_listen`, a second, plaintext gRPC server carries Health alone, for probes that
cannot present a client certificate.

Transport is mTLS (client certificates required) unless the config says insecure, which logs a
warning. With mTLS, each RPC needs the client role its certificate marks
(`flopwatch.collector.rpc.roles`: agents ingest, readers query, both read the log). Port 0 in
`listen`, `metrics_listen` or `health_listen` binds a free port; `start()`
reports the ports actually bound (`health_port` the health port's). The store (`--db`: SQLite,
or PostgreSQL shared by several collectors; see `flopwatch.collector.store.factory`) is opened,
used and closed on the one ingest thread. Alerts go to the log and, when configured, a webhook
(`flopwatch.collector.alerts.webhook`); silent nodes are looked for every `liveness_check_s` on
the ingest thread (`flopwatch.collector.alerts.liveness`), and lineage declared by others (the
operator's `flopwatch runs declare`) every `lineage_check_s`, so a derived run's alerts are
decided when it is declared (`Ingestor.check_lineage`).

Resource limits (`CollectorConfig.server`, `ServerLimits`): gRPC itself caps connections per
port, streams per connection and RPCs in all, and enforces the TLS handshake timeout, the idle
connection timeout and keepalive (`grpc_options`); the IngestService caps streams per client
address and certificate, bytes in flight and idle streams (`flopwatch.collector.rpc.ingest`).
Rejected records are logged once per peer per period (`flopwatch.collector.ingest.rejections`)
and TLS connections that never carried a call are counted and logged the same way
(`flopwatch.collector.rpc.connections`: gRPC hides refused handshakes from Python).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from flopwatch.collector import key_statements
from flopwatch.collector.alerts.events import AlertSink, LogSink, ThresholdPolicy
from flopwatch.collector.alerts.liveness import LivenessMonitor
from flopwatch.collector.alerts.webhook import WebhookSink, load_secret
from flopwatch.collector.config import CollectorConfig, ServerLimits
from flopwatch.collector.ingest.declared_parents import WorkloadParents
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.ingest.rejections import Rejections
from flopwatch.collector.ingest.workers import VerifyWorkers
from flopwatch.collector.log.key import default_key_path, open_log_key
from flopwatch.collector.log.tlog_service import TlogService, start_tlog
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.query import Query
from flopwatch.collector.rpc.connections import CallPeers, ConnectionStats
from flopwatch.collector.rpc.health import Health
from flopwatch.collector.rpc.ingest import IngestServicer
from flopwatch.collector.rpc.query import QueryServicer
from flopwatch.collector.rpc.roles import DenialStats, RoleInterceptor
from flopwatch.collector.rpc.servicer import LEGACY_SERVICE, SERVICES, add_services
from flopwatch.collector.rpc.tlog import LogServicer
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import Database, open_store, parse_db
from flopwatch.errors import ConfigError, FlopwatchError, KeyFileError, StoreError
from flopwatch.keys import SigningKey
from flopwatch.transport import host_port, read_file
from flopwatch.verify.record import VerifiedRecord

log = logging.getLogger(__name__)

# In-flight RPCs get this long to finish on shutdown before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


def server_credentials(
    config: CollectorConfig, connections: ConnectionStats | None = None
) -> grpc.ServerCredentials | None:
    """mTLS credentials, or None for plaintext (--insecure, with a warning). With
    `connections`, every connection accepted is counted (the certificates never change)."""
    if config.insecure:
        log.warning("plaintext gRPC: --insecure; the transport authenticates no one")
        return None
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        raise ConfigError("mTLS needs --tls-cert, --tls-key and --tls-ca; or pass --insecure")
    pair = (read_file(config.tls_key, "TLS key"), read_file(config.tls_cert, "TLS certificate"))
    ca = read_file(config.tls_ca, "CA certificate")
    if connections is None:
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)
    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([pair], root_certificates=ca),
        connections.fetcher,
        require_client_authentication=True,
    )


def grpc_options(limits: ServerLimits, max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC core's own limits (names: grpc/include/grpc/impl/channel_arg_names.h)."""

    def ms(seconds: float) -> int:
        # gRPC's arguments are C ints: a timeout beyond 24.8 days is as good as none.
        return min(2**31 - 1, max(1, round(seconds * 1000)))

    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second collector on the same port must fail
        # Refused before the TLS handshake, so they cost no crypto.
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", ms(limits.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(limits.connection_idle_timeout_s)),
        ("grpc.keepalive_time_ms", ms(limits.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(limits.keepalive_timeout_s)),
        # Keepalive pings go on while an agent's stream is open and quiet.
        ("grpc.http2.max_pings_without_data", 0),
        # No bandwidth-delay probing: it grows each stream's receive window to megabytes, which
        # gRPC then buffers for a stream that waits on its byte budget (bench/flood.py: 620
        # MiB with it under 32 flooding streams).
        ("grpc.http2.bdp_probe", 0),
    ]


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
        limits = config.server
        # Refuses RPCs a client's role does not allow (mTLS).
        self.roles = RoleInterceptor(DenialStats(max_label_values=limits.max_label_values))
        self.rejections = Rejections(
            interval_s=limits.rejection_log_interval_s, max_label_values=limits.max_label_values
        )
        self.connections = ConnectionStats(interval_s=limits.rejection_log_interval_s)
        self._summaries: asyncio.Task[None] | None = None
        self._lineage: asyncio.Task[None] | None = None

    def _open(
        self, db: Database, policy: ThresholdPolicy, key_path: Path
    ) -> tuple[Ingestor, SigningKey]:
        """Runs on the ingest thread: the store's connection belongs to it. The collector key
        must be the log's own (`open_log_key`); a wrong one stops the start here."""
        store = open_store(
            db,
            now_ns=self._now_ns,
            create=True,
            exclusive=True,
            account_days_kept=self.config.account_windows.kept_days,
        )
        try:
            log_key = open_log_key(key_path, store)
            parents = WorkloadParents(store, log_key, now_ns=self._now_ns)
            key_statements.start(store, log_key)
            ingestor = Ingestor(
                store,
                policy,
                self._sinks,
                limits=self.config.ingest_limits,
                now_ns=self._now_ns,
                enroll_on_first_use=self.config.enroll_on_first_use,
                pending_keys=self.config.pending_keys,
                rejections=self.rejections,
                max_label_values=self.config.server.max_label_values,
                scoped=self.config.scoped_policy,
                account_windows=self.config.account_windows.days,
                parents=parents,
            )
        except (StoreError, KeyFileError):
            store.close()
            raise
        self._store = store
        return ingestor, log_key

    async def start(self) -> tuple[int, int | None]:
        """Open the store and serve; return (gRPC port, metrics port or None)."""
        cfg = self.config
        policy = ThresholdPolicy(cfg.thresholds, cfg.alert_basis)
        db = parse_db(cfg.db)
        credentials = server_credentials(cfg, self.connections)
        metrics_addr = host_port(cfg.metrics_listen) if cfg.metrics_listen else None
        if cfg.webhook is not None:
            secret_file = cfg.webhook.secret_file
            secret = None if secret_file is None else load_secret(secret_file)
            self._webhook = WebhookSink(cfg.webhook, secret=secret)
            self._sinks.append(self._webhook)
        key_path = cfg.log_key or default_key_path(cfg.db)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flopwatch-ingest")
        loop = asyncio.get_running_loop()
        try:
            if cfg.verify_workers > 0:
                self._workers = await asyncio.to_thread(
                    VerifyWorkers, cfg.verify_workers, cfg.ingest_limits
                )
                log.info("verifying records in %d worker processes", cfg.verify_workers)
            ingestor, log_key = await loop.run_in_executor(
                self._executor, self._open, db, policy, key_path
            )
            assert self._store is not None
            self._log = TransparencyLog(self._store, log_key, now_ns=self._now_ns)
            query = Query(
                self._store,
                silent_after_s=cfg.silent_after_s,
                windows=cfg.account_windows.days,
                now_ns=self._now_ns,
            )
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
                assert self._ingest is not None
                register_metrics(
                    self.registry,
                    ingestor.snapshot,
                    policy.thresholds,
                    liveness=liveness.snapshot,
                    webhook=None if self._webhook is None else self._webhook.stats,
                    streams=self._ingest.stats,
                    rejections=self.rejections.counts,
                    connections=self.connections.counts,
                    enrollment=ingestor.enrollment.counts,
                    roles=self.roles.stats.counts,
                    series=cfg.metrics_series,
                    now_ns=self._now_ns,
                )
                metrics_port = self._start_metrics(*metrics_addr)
            self._watch = asyncio.create_task(self._watch_liveness(liveness))
            self._signing = asyncio.create_task(self._sign_tree_heads())
            self._summaries = asyncio.create_task(self._log_summaries())
            self._lineage = asyncio.create_task(self._watch_lineage(ingestor))
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

    async def _watch_lineage(self, ingestor: Ingestor) -> None:
        """Every lineage_check_s, on the ingest thread: decide the run alerts of runs declared
        derived by others since the last look."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.lineage_check_s)
            try:
                await loop.run_in_executor(self._executor, ingestor.check_lineage)
            except StoreError as e:  # the next check tries again
                log.error("cannot read the run lineage: %s", e)

    async def _log_summaries(self) -> None:
        """Write the rate-limited summaries of rejected records and unused connections."""
        period = self.config.server.rejection_log_interval_s
        while True:
            await asyncio.sleep(min(period, 10.0))
            self.rejections.flush()
            self.connections.flush()

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
        # With mTLS, each RPC needs its client role (flopwatch.collector.rpc.roles).
        roles = () if credentials is None else (self.roles,)
        self._server = _grpc_server(
            self.config.server, limits.max_grpc_message_bytes, CallPeers(self.connections), *roles
        )
        self._ingest = IngestServicer(
            ingestor,
            self._executor,
            limits=limits,
            verify=self._verify_ahead if self._workers is not None else None,
            server=self.config.server,
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
        self._health_server = _grpc_server(
            self.config.server, self.config.limits.max_grpc_message_bytes
        )
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
        for task in (self._watch, self._signing, self._summaries, self._lineage):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        if self._summaries is not None:
            self.rejections.flush(everything=True)
            self.connections.flush(everything=True)
        self._watch = self._signing = self._summaries = self._lineage = None
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


def _grpc_server(
    limits: ServerLimits,
    max_message_bytes: int,
    *interceptors: grpc.aio.ServerInterceptor[Any, Any],
) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=interceptors,
        options=grpc_options(limits, max_message_bytes),
        maximum_concurrent_rpcs=limits.max_streams,
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
