"""Turn GPU readings into signed, chained attestation envelopes.

A record numbers its measured devices (a whole GPU, or one MIG instance) in the order their
readings come; intervals, gaps and hardware bindings name them by that number. A reading that
was not measured becomes a signed gap with its cause; the first record after each start carries
the GPUs' hardware bindings (flopwatch/binding.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flopwatch
from flopwatch.agent.backends.base import (
    BindingStatus,
    GapCause,
    GpuInfo,
    GpuReading,
    HardwareBinder,
    HardwareBinding,
)
from flopwatch.attestation import make_interval
from flopwatch.attribution import UNATTRIBUTED, Attribution, JobWindow, attribute
from flopwatch.binding import binding_nonce
from flopwatch.dsse import Envelope, Signer
from flopwatch.identifiers import as_text
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import MODEL_VERSION
from flopwatch.model.figures import method_for
from flopwatch.v1 import attestation_pb2 as pb

GAP_REASON = {
    GapCause.SAMPLING_ERROR: pb.GAP_REASON_SAMPLING_ERROR,
    GapCause.PROFILER_BUSY: pb.GAP_REASON_PROFILER_BUSY,
}
BINDING_STATUS = {
    BindingStatus.REPORT: pb.BINDING_STATUS_REPORT,
    BindingStatus.NOT_SUPPORTED: pb.BINDING_STATUS_NOT_SUPPORTED,
    BindingStatus.CC_OFF: pb.BINDING_STATUS_CC_OFF,
    BindingStatus.ERROR: pb.BINDING_STATUS_ERROR,
}
_DETAIL_CHARS = 200
# Report bytes one record may carry (half the envelope limit); reports past it are left out and
# say so, so that a node with many GPUs never signs a record too large to send.
BINDING_BYTES_BUDGET = DEFAULT_LIMITS.max_envelope_bytes // 2


@dataclass
class ChainHead:
    """Sequence and digest of the last record signed with this key (0, b"" before the first)."""

    sequence: int = 0
    digest: bytes = b""


def device_key(g: GpuInfo) -> tuple[str, str]:
    """Names one measured device: a GPU's uuid and, for a MIG instance, the instance's."""
    return (g.uuid, g.mig_instance)


def batch_devices(readings: Sequence[GpuReading]) -> list[GpuInfo]:
    """The devices of a batch in the order RecordBuilder numbers them (first reading first)."""
    seen: dict[tuple[str, str], GpuInfo] = {}
    for r in readings:
        seen.setdefault(device_key(r.gpu), r.gpu)
    return list(seen.values())


def gpu_identity(g: GpuInfo) -> pb.GpuIdentity:
    return pb.GpuIdentity(
        uuid=g.uuid,
        serial=g.serial,
        name=g.name,
        sm_count=g.sm_count,
        cc_major=g.cc[0],
        cc_minor=g.cc[1],
        max_sm_clock_mhz=g.max_sm_clock_mhz,
        mig_instance=g.mig_instance,
        index=g.index,
    )


def reading_attributions(
    reading: GpuReading,
    windows: Sequence[JobWindow],
    unattributed_id: str = UNATTRIBUTED,
    unattributed_account: str = "",
) -> list[Attribution]:
    """Split a reading among jobs; GPU claims match the GPU's uuid or its MIG instance's."""
    return attribute(
        reading.start_ns,
        reading.end_ns,
        [(p.pid, p.share) for p in reading.processes],
        windows,
        gpu_ids=[i for i in device_key(reading.gpu) if i],
        unattributed_id=unattributed_id,
        unattributed_account=unattributed_account,
    )


def utilization_centipercent(fraction: float | None) -> int:
    """A kernel-busy fraction in 1/10,000, rounded up: the bound it feeds must stay sound."""
    return min(10_000, math.ceil(max(fraction or 0.0, 0.0) * 10_000))


def binding_message(b: HardwareBinding, slot: int, nonce: bytes) -> pb.GpuBinding:
    """A binding for the record; report data (and the nonce) only with status REPORT."""
    report = b.status is BindingStatus.REPORT
    return pb.GpuBinding(
        gpu=slot,
        status=BINDING_STATUS[b.status],
        nonce=nonce if report else b"",
        report=b.report if report else b"",
        cec_report=b.cec_report if report else b"",
        cert_chain=b.cert_chain if report else b"",
        detail=as_text(b.detail, _DETAIL_CHARS),
    )


def restart_gaps(
    resumed_after_ns: int | None, readings: Sequence[GpuReading], devices: Sequence[GpuInfo]
) -> list[pb.Gap]:
    """AGENT_RESTART gaps for those of the batch's `devices` that start after
    `resumed_after_ns`: from it to the start of the device's first interval in the batch
    (gaps name devices by their `batch_devices` slot). None gives no gaps."""
    if resumed_after_ns is None:
        return []
    wanted = {device_key(g) for g in devices}
    first: dict[tuple[str, str], int] = {}
    for r in readings:
        key = device_key(r.gpu)
        if key in wanted:
            first[key] = min(first.get(key, r.start_ns), r.start_ns)
    return [
        pb.Gap(
            gpu=slot,
            start_unix_ns=resumed_after_ns,
            end_unix_ns=first[device_key(g)],
            reason=pb.GAP_REASON_AGENT_RESTART,
            detail="agent not sampling: stopped or restarting",
        )
        for slot, g in enumerate(batch_devices(readings))
        if device_key(g) in first and first[device_key(g)] > resumed_after_ns
    ]


class RecordBuilder:
    """Builds one attestation per batch of readings, signs it and advances the chain head.

    `hardware` asks the GPUs for confidential-computing reports; the first record built carries
    its answers, or says "not supported" for every GPU where there is no `hardware`.
    `resumed_after_ns` is the end of the last record spooled before this start (None on a first
    start, or where it is unknown): each device's first interval after it comes with a signed
    AGENT_RESTART gap covering the time in between. Work no job claims goes to
    `unattributed_id`, with `unattributed_account` (the node's default account, if any).
    """

    def __init__(
        self,
        *,
        node_id: str,
        cluster: str,
        signer: Signer,
        head: ChainHead,
        now_ns: Callable[[], int],
        hardware: HardwareBinder | None = None,
        resumed_after_ns: int | None = None,
        unattributed_id: str = UNATTRIBUTED,
        unattributed_account: str = "",
    ) -> None:
        self._node_id = node_id
        self._cluster = cluster
        self._signer = signer
        self._key_id = signer.key_id  # derived from the key on every call: once is enough
        self._identities: dict[GpuInfo, pb.GpuIdentity] = {}  # built once per device
        self._head = head
        self._now_ns = now_ns
        self._hardware = hardware
        self._bound = False  # the bindings went into a record already
        self._resumed_after_ns = resumed_after_ns
        self._unattributed_id = unattributed_id  # the node's job for work no job claims
        self._unattributed_account = unattributed_account
        self._seen: set[tuple[str, str]] = set()  # devices that had their restart gap

    @property
    def head(self) -> ChainHead:
        return self._head

    def build(
        self,
        readings: Sequence[GpuReading],
        windows: Sequence[JobWindow],
        gaps: Sequence[pb.Gap] = (),
    ) -> Envelope:
        """Sign one record of `readings`, all attributed with `windows`."""
        return self.build_rounds([(readings, windows)], gaps)

    def build_rounds(
        self,
        rounds: Sequence[tuple[Sequence[GpuReading], Sequence[JobWindow]]],
        gaps: Sequence[pb.Gap] = (),
    ) -> Envelope:
        """Sign one record of several sampling rounds, each round's readings attributed with
        the windows its attribution sources gave right after it (a job that ended between two
        rounds claims nothing of the later one)."""
        readings = [r for round_readings, _ in rounds for r in round_readings]
        windows_of = [w for round_readings, w in rounds for _ in round_readings]
        gpus = batch_devices(readings)
        slots = {device_key(g): i for i, g in enumerate(gpus)}
        intervals = []
        fresh = [g for g in gpus if device_key(g) not in self._seen]
        gap_msgs = list(gaps) + restart_gaps(self._resumed_after_ns, readings, fresh)
        self._seen.update(device_key(g) for g in fresh)
        for r, windows in zip(readings, windows_of, strict=True):
            slot = slots[device_key(r.gpu)]
            if r.error is not None:
                gap_msgs.append(
                    pb.Gap(
                        gpu=slot,
                        start_unix_ns=r.start_ns,
                        end_unix_ns=r.end_ns,
                        reason=GAP_REASON[r.cause],
                        detail=as_text(r.error, _DETAIL_CHARS),
                    )
                )
                continue
            has_gpm = r.pipe_busy is not None
            intervals.append(
                make_interval(
                    gpu_index=slot,
                    counters=r.counters(),
                    method=method_for(r.gpu.cc, has_gpm),
                    start_ns=r.start_ns,
                    end_ns=r.end_ns,
                    attributions=reading_attributions(
                        r, windows, self._unattributed_id, self._unattributed_account
                    ),
                    energy_mj=r.energy_mj or 0,
                    clock_samples=r.clock_samples,
                    utilization_centipercent=0
                    if has_gpm
                    else utilization_centipercent(r.utilization),
                )
            )
        seq = self._head.sequence + 1
        att = pb.Attestation(
            node_id=self._node_id,
            key_id=self._key_id,
            agent_version=flopwatch.__version__,
            flop_model_version=MODEL_VERSION,
            sequence=seq,
            previous_digest=self._head.digest,
            cluster=self._cluster,
            signed_at_unix_ns=self._now_ns(),
            intervals=intervals,
            gaps=gap_msgs,
        )
        if not self._bound and readings:
            att.bindings.extend(self._bindings(att, gpus, slots))
            self._bound = True
        att.gpus.extend(self._identity(g) for g in gpus)
        env = Envelope.sign(att.SerializeToString(deterministic=True), self._signer)
        self._head = ChainHead(sequence=seq, digest=env.digest)
        return env

    def _identity(self, g: GpuInfo) -> pb.GpuIdentity:
        msg = self._identities.get(g)
        if msg is None:
            msg = self._identities[g] = gpu_identity(g)
        return msg

    def _bindings(
        self, att: pb.Attestation, gpus: list[GpuInfo], slots: dict[tuple[str, str], int]
    ) -> list[pb.GpuBinding]:
        """This record's hardware bindings; physical GPUs not yet in `gpus` are appended."""
        nonce = binding_nonce(att.key_id, att.sequence, att.previous_digest)
        if self._hardware is not None:
            answers = list(self._hardware.hardware_bindings(nonce))
        else:
            physical: dict[str, GpuInfo] = {}
            for g in gpus:
                physical.setdefault(g.uuid, g)
            answers = [
                HardwareBinding(g, BindingStatus.NOT_SUPPORTED, "backend has no hardware binding")
                for g in physical.values()
            ]
        out, budget = [], BINDING_BYTES_BUDGET
        for answer in answers:
            key = device_key(answer.gpu)
            if key not in slots:
                slots[key] = len(gpus)
                gpus.append(answer.gpu)
            size = len(answer.report) + len(answer.cec_report) + len(answer.cert_chain)
            if answer.status is BindingStatus.REPORT and size > budget:
                answer = HardwareBinding(  # noqa: PLW2901 (the record holds this answer instead)
                    answer.gpu, BindingStatus.ERROR, "report left out: record full"
                )
            elif answer.status is BindingStatus.REPORT:
                budget -= size
            out.append(binding_message(answer, slots[key], nonce))
        return out
