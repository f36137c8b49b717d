"""The node agent's main loop: sample -> sign -> spool -> send.

A sampling thread takes readings from the GPU backend, signs one chained attestation per batch,
writes it to the spool (durably) and wakes the sender, which runs on an asyncio loop in the
calling thread. When the backend is exhausted (end of a replayed trace) the agent waits for the
collector to acknowledge everything, up to `drain_timeout_s`. A stop event ends it at once:
whatever is unacknowledged stays in the spool and is sent on the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from flopwatch.agent.attribution.assemble import build_attributor
from flopwatch.agent.attribution.kubernetes import KubernetesSource
from flopwatch.agent.attribution.registry import JobRegistry
from flopwatch.agent.backends.base import GpuBackend, GpuReading, HardwareBinder
from flopwatch.agent.backends.replay import ReplayBackend
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.control.server import ControlServer
from flopwatch.agent.metrics import AgentSnapshot, AgentStats, MetricsServer
from flopwatch.agent.records import ChainHead, RecordBuilder, batch_devices
from flopwatch.agent.sender import Sender, read_enroll_token
from flopwatch.agent.spool.rekey import open_key_spool
from flopwatch.agent.spool.store import RecoveryReport, SpoolLoss
from flopwatch.agent.state_dir import hold_state_dir, prepare_state_dir
from flopwatch.attribution import JobWindow
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, VerificationError
from flopwatch.identifiers import as_text
from flopwatch.job_ids import check_cluster, unattributed_job_id
from flopwatch.keys import SigningKey, public_raw, short_key_id
from flopwatch.transport import client_credentials
from flopwatch.v1 import attestation_pb2 as pb

log = logging.getLogger(__name__)

SUMMARY_EVERY = 300  # records signed between INFO summaries
# previous_digest when the chain must go on but no record of this key is left to name.
_UNKNOWN_DIGEST = bytes(32)
_GAP_REASONS = {"overflow": pb.GAP_REASON_SPOOL_OVERFLOW, "corrupt": pb.GAP_REASON_SPOOL_CORRUPT}


def make_backend(config: AgentConfig) -> GpuBackend:
    """Build the backend `config.backend` names: "nvml", "replay:PATH" or "sim:N[:PROFILE]"."""
    kind, _, arg = config.backend.partition(":")
    if config.backend == "nvml":
        from flopwatch.agent.backends.nvml.backend import NvmlBackend  # noqa: PLC0415 (needs pynvml)

        return NvmlBackend(interval_s=config.interval_s)
    if kind == "replay" and arg:
        return ReplayBackend(Path(arg), speed=config.replay_speed)
    count, _, profile_name = arg.partition(":")
    if kind == "sim" and count.isdigit() and int(count) > 0:
        from flopwatch.agent.backends.sim import PROFILES, SimBackend  # noqa: PLC0415

        profile = PROFILES.get(profile_name or "h100")
        if profile is None:
            raise ConfigError(
                f"backend {config.backend!r}: unknown simulator profile {profile_name!r}; "
                f"use one of {', '.join(sorted(PROFILES))}"
            )
        try:
            return SimBackend(
                int(count),
                interval_s=config.interval_s,
                realtime=True,
                profile=profile,
                node_id=config.node_id,  # GPU UUIDs unique per node
            )
        except ValueError as e:
            raise ConfigError(f"backend {config.backend!r}: {e}") from e
    raise ConfigError(
        f"unknown backend {config.backend!r}; use nvml, replay:PATH or sim:N[:PROFILE] (N > 0)"
    )


def channel_credentials(config: AgentConfig) -> grpc.ChannelCredentials | None:
    """mTLS credentials from the config, or None with a warning when it says --insecure."""
    if config.insecure:
        log.warning("--insecure: traffic to collector %s is plaintext", config.collector)
        return None
    return client_credentials(config.tls_ca, config.tls_cert, config.tls_key)


def envelope_span(data: bytes) -> tuple[int, int] | None:
    """The [start, end) unix-ns range an envelope's intervals and own gaps cover, if it parses.

    Gaps reporting lost records are left out: they cover those records' time, not this one's
    (if this record is lost too, the spool reports those losses again)."""
    try:
        att = pb.Attestation.FromString(Envelope.from_bytes(data).payload)
    except (VerificationError, DecodeError):
        return None
    spans = [(i.start_unix_ns, i.end_unix_ns) for i in att.intervals]
    spans += [(g.start_unix_ns, g.end_unix_ns) for g in att.gaps if not g.lost_sequence_last]
    return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None


def resume_head(report: RecoveryReport) -> tuple[ChainHead, list[SpoolLoss]]:
    """Where the chain goes on after the spool's recovery, and the losses to sign gaps for.

    Normally the next record follows the last one spooled. After a loss above it (records cut
    from the spool's tail, or acknowledged but gone), sequences up to `tail.last` may be held
    by the collector with content this agent no longer has: reusing one would be a fork. So
    the next record skips them *and one more*: the collector accepts a record whose seq-1 it
    does not hold (a gap, see flopwatch.chain.judge), but would reject one that names the
    wrong digest for a seq-1 it holds. The next record carries a signed SPOOL_CORRUPT gap
    naming every skipped sequence; its previous_digest names the last record still known.
    """
    head, tail = report.head, report.tail_loss
    losses = [x for x in report.losses if x is not tail]
    if tail is None:
        return (ChainHead(head.sequence, head.digest) if head else ChainHead()), losses
    skipped = tail.last + 1
    losses.append(dataclasses.replace(tail, last=skipped))
    return ChainHead(skipped, head.digest if head else _UNKNOWN_DIGEST), losses


def loss_gaps(losses: Sequence[SpoolLoss], readings: Sequence[GpuReading]) -> list[pb.Gap]:
    """One gap per spool loss per GPU of the batch (RecordBuilder numbers GPUs in this order).

    The sequence range is exact; the time range is the best known: the lost records' own span,
    else from the end of the last record kept to the start of this batch.
    """
    devices = batch_devices(readings)
    batch_start = min(r.start_ns for r in readings)
    gaps = []
    for loss in losses:
        end = loss.end_ns if loss.end_ns is not None else batch_start
        start = loss.start_ns if loss.start_ns is not None else end - 1
        end = max(end, start + 1)
        for slot in range(len(devices)):
            gaps.append(
                pb.Gap(
                    gpu=slot,
                    start_unix_ns=start,
                    end_unix_ns=end,
                    reason=_GAP_REASONS[loss.reason],
                    detail=as_text(loss.detail, 200),
                    lost_sequence_first=loss.first,
                    lost_sequence_last=loss.last,
                )
            )
    return gaps


class Agent:
    """One node agent: its key, spool, backend and sender. `run` once, then it is closed."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        backend: GpuBackend | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        credentials = channel_credentials(config)
        check_cluster(config.cluster)
        prepare_state_dir(config.state_dir)
        key, created = SigningKey.load_or_create(config.key_path)
        if created:
            log.info("created node key %s", key.key_id)
        # The spool holds this key's chain; another key's (a re-keyed node) is set aside.
        self._spool, old_chain_end_ns = open_key_spool(
            config.spool_dir,
            key.key_id,
            max_bytes=config.spool_max_bytes,
            segment_bytes=config.spool_segment_bytes,
            span_of=envelope_span,
        )
        head, self._losses = resume_head(self._spool.recovery)
        try:
            self._backend = backend if backend is not None else make_backend(config)
        except BaseException:
            self._spool.close()
            raise
        try:  # jobs registered with `flopwatch job start` survive restarts in the state dir
            gpus = self._backend.gpus()
            self.registry = JobRegistry(config.registry_path, cluster=config.cluster, gpus=gpus)
            self._attributor = build_attributor(config, gpus, self.registry)
        except BaseException:
            self._backend.close()
            self._spool.close()
            raise
        self.stats = AgentStats()
        self.started = threading.Event()  # set once the control socket and metrics serve
        self.metrics_port: int | None = None
        recovered = self._spool.recovery.head  # its end: where the restart gap begins
        restart_ns = recovered.end_ns if recovered else old_chain_end_ns
        try:
            self._builder = RecordBuilder(
                node_id=config.node_id,
                cluster=config.cluster,
                signer=key,
                head=head,
                now_ns=now_ns,
                hardware=self._backend if isinstance(self._backend, HardwareBinder) else None,
                resumed_after_ns=restart_ns,
                unattributed_id=unattributed_job_id(config.cluster, config.node_id),
                unattributed_account=config.default_account,
                max_record_bytes=config.max_record_bytes,
            )
        except BaseException:
            self._attributor.close()
            self._backend.close()
            self._spool.close()
            raise
        self.sender = Sender(
            config.collector,
            self._spool,
            public_key_raw=public_raw(key.public_key),
            insecure=config.insecure,
            channel_credentials=credentials,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            ack_timeout_s=config.ack_timeout_s,
            enroll_token=read_enroll_token(config.enroll_token_file),
        )
        self._signed = 0
        self._exhausted = False
        self._error: BaseException | None = None
        log.info(
            "agent %s: key %s, next sequence %d, %d record(s) pending in the spool",
            config.node_id,
            short_key_id(key.key_id),
            head.sequence + 1,
            self._spool.depth(),
        )

    def run(self, stop: threading.Event | None = None) -> int:
        """Run until the backend is exhausted or `stop` is set (which is set on return)."""
        try:
            return asyncio.run(self._main(stop or threading.Event()))
        finally:
            self._attributor.close()
            self._backend.close()
            self._spool.close()

    def snapshot(self) -> AgentSnapshot:
        """What the agent's metrics show: signed so far, spool depth, acknowledgements."""
        sender = self.sender.stats
        return dataclasses.replace(
            self.stats.snapshot(self._config.node_id, self._config.cluster),
            spool_records=self._spool.depth(),
            spool_bytes=self._spool.bytes(),
            records_acked=sender.acked,
            records_rejected=sender.rejected,
            last_ack_unix_s=sender.last_success_unix,
            attribution_errors=dict(self._attributor.errors),
            labels_refused=self._attributor.refusals.snapshot(),
            kubernetes=next(
                (s.status() for s in self._attributor.sources if isinstance(s, KubernetesSource)),
                None,
            ),
        )

    async def _main(self, stop: threading.Event) -> int:
        control = metrics = None
        try:
            if self._config.control_socket is not None:
                control = ControlServer(self._config.control_socket, self.registry)
                await control.start()
            if self._config.metrics_listen is not None:
                metrics = MetricsServer(self._config.metrics_listen, self.snapshot)
                self.metrics_port = metrics.port
            self.started.set()
            return await self._loop(stop)
        finally:
            stop.set()
            if metrics is not None:
                metrics.close()
            if control is not None:
                await control.stop()

    async def _loop(self, stop: threading.Event) -> int:
        loop = asyncio.get_running_loop()
        sampler_done = asyncio.Event()
        thread = threading.Thread(
            target=self._sample,
            args=(stop, lambda: loop.call_soon_threadsafe(sampler_done.set)),
            name="flopwatch-sampler",
            daemon=True,
        )
        sender = asyncio.create_task(self.sender.run(), name="flopwatch-sender")
        stopped = asyncio.create_task(asyncio.to_thread(stop.wait))
        finished = asyncio.create_task(sampler_done.wait())
        thread.start()
        try:
            await asyncio.wait({sender, stopped, finished}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done():
                await sender  # raises what ended it (a SpoolError)
            if finished.done() and self._error is not None:
                raise self._error
            if not self._exhausted or stop.is_set():
                log.info("stopping; %d record(s) left in the spool", self._spool.depth())
                return 0
            drain = asyncio.create_task(self.sender.drain(self._config.drain_timeout_s))
            await asyncio.wait({drain, stopped, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done():
                await sender
            if not drain.done():
                drain.cancel()
                log.info("stopped while draining; %d record(s) left", self._spool.depth())
                return 0
            return self._exit_code(drain.result())
        finally:
            stop.set()  # ends the sampling thread and the stop waiter
            await asyncio.to_thread(thread.join)
            sender.cancel()
            await asyncio.wait({sender, stopped, finished})
            finished.cancel()

    def _exit_code(self, drained: bool) -> int:
        stats = self.sender.stats
        if not drained:
            log.error(
                "%d record(s) not acknowledged %.0fs after the backend ended; kept in the spool",
                self._spool.depth(),
                self._config.drain_timeout_s,
            )
            return 1
        if stats.rejected:
            log.error("the collector rejected %d record(s)", stats.rejected)
            return 1
        log.info("done: %d record(s) signed and acknowledged", self._signed)
        return 0

    def _sample(self, stop: threading.Event, finished: Callable[[], object]) -> None:
        # Rounds waiting to be signed together; each with the windows taken right after it.
        rounds: list[tuple[list[GpuReading], Sequence[JobWindow]]] = []
        try:
            while not stop.is_set():
                readings = self._backend.next_readings()
                if readings is None:
                    self._exhausted = True
                    log.info("backend exhausted after %d record(s)", self._signed + bool(rounds))
                    return
                if readings:
                    rounds.append((readings, self._attributor.windows(readings)))
                if len(rounds) >= self._config.intervals_per_record:
                    self._record(rounds)
                    rounds = []
        except BaseException as e:  # handed to the event loop's thread, which raises it
            self._error = e
        finally:
            try:
                if rounds and self._error is None:  # what was measured before the stop
                    self._record(rounds)
            except BaseException as e:
                self._error = e
            finished()

    def _record(self, rounds: Sequence[tuple[list[GpuReading], Sequence[JobWindow]]]) -> None:
        readings = [r for round_readings, _ in rounds for r in round_readings]
        gaps = loss_gaps(self._losses, readings)
        # One record, or several consecutive ones when the batch is larger than a record may be.
        envelopes = self._builder.build_records(rounds, gaps)
        self._losses = []
        for n, env in enumerate(envelopes):
            att = pb.Attestation.FromString(env.payload)
            # Records dropped to make room: reported in the next batch's first record.
            self._losses += self._spool.append(att.sequence, env.to_bytes())
            self._signed += 1
            self.stats.observe(readings if n == 0 else (), att)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "signed #%d: %d GPU(s), %d interval(s), %d gap(s), %d bytes, "
                    "FLOPs estimate %d, upper %d",
                    att.sequence,
                    len(att.gpus),
                    len(att.intervals),
                    len(att.gaps),
                    len(env.to_bytes()),
                    sum(i.flops_estimate for i in att.intervals),
                    sum(i.flops_upper for i in att.intervals),
                )
            if self._signed % SUMMARY_EVERY == 0:
                self._summary()
        self.sender.notify()

    def _summary(self) -> None:
        stats = self.sender.stats
        log.info(
            "signed %d record(s); spool %d pending, %d bytes; sent %d, acked %d, rejected %d",
            self._signed,
            self._spool.depth(),
            self._spool.bytes(),
            stats.sent,
            stats.acked,
            stats.rejected,
        )


def run_agent(config: AgentConfig, *, stop: threading.Event | None = None) -> int:
    """Run the agent; return its exit code: 0 done or stopped, 1 records left unacknowledged
    or rejected. Errors (ConfigError, KeyFileError, SpoolError, BackendError) propagate for
    the CLI to report; a state directory another agent holds is a ConfigError, before anything
    in it is touched. `stop` ends it; it is set when the agent returns.
    """
    with hold_state_dir(config.state_dir):  # held until the agent exits
        return Agent(config).run(stop)
