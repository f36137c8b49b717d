"""Turn GPU readings into signed, chained attestation envelopes.

A record numbers its measured devices (a whole GPU, or one MIG instance) in the order their
readings come; intervals, gaps and hardware bindings name them by that number. A reading that
was not measured becomes a signed gap with its cause; the first record after each start carries
the GPUs' hardware bindings (flopwatch/binding.py).

Size: a signed envelope is at most `max_record_bytes` (`MAX_RECORD_BYTES`, 60 KiB, under the
65,535 bytes a tlog-tiles log entry may hold, `flopwatch.tlog.tiles.MAX_ENTRY_BYTES`). A batch
that does not fit is signed as several consecutive records of the chain, each holding whole
GPU-intervals and gaps in the order they were measured (and within the verifier's counts of
GPUs, intervals and gaps per record), so nothing changes but the number of signatures.

One GPU-interval always fits: an interval whose jobs would make it too large (or more than
`Limits.max_jobs_per_interval` of them) keeps its largest shares and hands the rest to the
node's unattributed job (`fold_jobs`, logged): the device's upper bound is unchanged, the
folded shares are estimated at the default precision, and those jobs' attribution is lost.
Worst case, job ids at the verifier's 256 characters in 4-byte UTF-8 (JOBS.json ids; sources
are the agent's own short names): about 1,070 bytes per job, 64 jobs about 67 KiB. The ids the
agent makes (Slurm, Kubernetes, manual) are ASCII, under about 200 characters: 64 jobs are
about 16 KiB, so folding is for pathological inputs only.

Hardware bindings that do not fit beside a record's first item wait for the next record, each
reported over that record's own nonce.
"""

from __future__ import annotations

import dataclasses
import logging
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
from flopwatch.dsse import PAYLOAD_TYPE, Envelope, Signer
from flopwatch.errors import ConfigError
from flopwatch.identifiers import as_text
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.model import MODEL_VERSION, Precision
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
log = logging.getLogger(__name__)

# A signed envelope's bytes, at most: under tlog-tiles' 65,535-byte entry with room to spare.
MAX_RECORD_BYTES = 60 * 1024
# The least `max_record_bytes` may be: one GPU-interval (jobs folded), the record's header, two
# GPU identities and one hardware binding of the largest size NVML returns fit in it.
MIN_RECORD_BYTES = 32 * 1024
_FOLD_LOG_EVERY = 1000  # intervals with folded jobs between two warnings


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


def fold_jobs(
    shares: Sequence[Attribution], keep: int, unattributed_id: str, unattributed_account: str = ""
) -> list[Attribution]:
    """`shares` with all but the `keep` largest handed to the node's unattributed job (in the
    node's default account, `unattributed_account`).

    The shares still sum to 1,000,000 ppm; the result holds at most `keep` + 1 jobs, ordered as
    `attribute` orders them. With `keep` >= len(shares) nothing changes.
    """
    if len(shares) <= keep:
        return list(shares)
    nobody = (unattributed_id, Precision.UNSPECIFIED, UNATTRIBUTED)
    ranked = sorted(range(len(shares)), key=lambda i: (-shares[i].share_ppm, i))
    kept = [shares[i] for i in sorted(ranked[:keep])]
    out = [a for a in kept if (a.job_id, a.precision, a.source) != nobody]
    folded = sum(a.share_ppm for a in shares) - sum(a.share_ppm for a in out)
    base = next((a for a in shares if (a.job_id, a.precision, a.source) == nobody), None)
    if base is None:
        base = Attribution(
            unattributed_id, 0, Precision.UNSPECIFIED, UNATTRIBUTED, account=unattributed_account
        )
    out.append(dataclasses.replace(base, share_ppm=folded))
    return sorted(out, key=lambda a: (a.job_id, a.precision.value, a.source))


def varint_bytes(n: int) -> int:
    """Bytes of `n` (>= 0) as a protobuf varint."""
    return max(1, (n.bit_length() + 6) // 7)


def field_bytes(size: int) -> int:
    """Bytes a length-delimited protobuf field of `size` bytes takes (field number < 16)."""
    return 1 + varint_bytes(size) + size


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


@dataclass(frozen=True)
class _Bound:
    """What one record did with bindings: the devices the hardware answered for, and those of
    them the record carries."""

    answered: dict[tuple[str, str], GpuInfo]
    placed: list[tuple[str, str]]


@dataclass
class _Item:
    """A GPU-interval or a gap waiting for a record; its `gpu` is set where it is placed."""

    device: GpuInfo
    msg: pb.GpuInterval | pb.Gap
    size: int  # its serialized bytes at slot 0 (any other slot adds a tag and a byte)

    @classmethod
    def of(cls, device: GpuInfo, msg: pb.GpuInterval | pb.Gap) -> _Item:
        msg.gpu = 0
        return cls(device, msg, msg.ByteSize())


class _Draft:
    """A record being filled: what it holds so far and its payload's size."""

    def __init__(
        self,
        att: pb.Attestation,
        budget: int,
        limits: Limits,
        identity: Callable[[GpuInfo], int],
    ) -> None:
        self.att = att
        self.size = att.ByteSize()
        self._budget = budget
        self._limits = limits
        self._identity_bytes = identity  # a device's identity as a field of the record
        self._gpus: list[GpuInfo] = []  # the devices items name, in the order they name them
        self._slots: dict[tuple[str, str], int] = {}
        self._extra: dict[tuple[str, str], GpuInfo] = {}  # devices only bindings name so far
        self._bindings: list[tuple[GpuInfo, pb.GpuBinding]] = []

    def _grow(self, device: GpuInfo, msg_size: int) -> bool:
        """Count a message of `msg_size` bytes, with its device's identity if the record lacks
        it; False, counting nothing, when it does not fit."""
        key = device_key(device)
        more = field_bytes(msg_size)
        if key not in self._slots and key not in self._extra:
            if len(self._gpus) + len(self._extra) >= self._limits.max_gpus_per_attestation:
                return False
            more += self._identity_bytes(device)
        if self.size + more > self._budget:
            return False
        self.size += more
        return True

    def add_item(self, item: _Item) -> bool:
        """Add a GPU-interval or gap if it fits (bytes and the verifier's counts)."""
        lim, att = self._limits, self.att
        if isinstance(item.msg, pb.Gap):
            full = len(att.gaps) >= lim.max_gaps_per_attestation
        else:
            full = len(att.intervals) >= lim.max_intervals_per_attestation
        key = device_key(item.device)
        item.msg.gpu = self._slots.get(key, len(self._gpus))
        if full or not self._grow(item.device, item.size + (2 if item.msg.gpu else 0)):
            return False
        if key not in self._slots:
            self._extra.pop(key, None)
            self._slots[key] = len(self._gpus)
            self._gpus.append(item.device)
        if isinstance(item.msg, pb.Gap):
            att.gaps.append(item.msg)
        else:
            att.intervals.append(item.msg)
        return True

    def add_binding(self, device: GpuInfo, msg: pb.GpuBinding) -> bool:
        """Add a binding if it fits. A device only bindings name takes its slot in `finish`,
        after the items' devices: its size is counted with a one-byte slot, the most it takes."""
        msg.gpu = 1
        if not self._grow(device, msg.ByteSize()):
            return False
        key = device_key(device)
        if key not in self._slots:
            self._extra[key] = device
        self._bindings.append((device, msg))
        return True

    def finish(self, identity: Callable[[GpuInfo], pb.GpuIdentity]) -> None:
        """Number the devices only bindings name and add the bindings and identities."""
        for key, device in self._extra.items():
            self._slots[key] = len(self._gpus)
            self._gpus.append(device)
        for device, msg in self._bindings:
            msg.gpu = self._slots[device_key(device)]
            self.att.bindings.append(msg)
        self.att.gpus.extend(identity(g) for g in self._gpus)


class RecordBuilder:
    """Builds the records of a batch of readings, signs them and advances the chain head.

    `hardware` asks the GPUs for confidential-computing reports; the first record built carries
    its answers (those that fit; the rest follow in the next records), or says "not supported"
    for every GPU where there is no `hardware`. `resumed_after_ns` is the end of the last record
    spooled before this start (None on a first start, or where it is unknown): each device's
    first interval after it comes with a signed AGENT_RESTART gap covering the time in between.
    Work no job claims goes to `unattributed_id`, with `unattributed_account` (the node's
    default account, if any). Every envelope is at most `max_record_bytes` (see the module
    docstring).
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
        max_record_bytes: int = MAX_RECORD_BYTES,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not MIN_RECORD_BYTES <= max_record_bytes <= limits.max_envelope_bytes:
            raise ConfigError(
                f"max_record_bytes must be {MIN_RECORD_BYTES} to {limits.max_envelope_bytes}, "
                f"got {max_record_bytes}"
            )
        self._node_id = node_id
        self._cluster = cluster
        self._signer = signer
        self._key_id = signer.key_id  # derived from the key on every call: once is enough
        self._identities: dict[GpuInfo, pb.GpuIdentity] = {}  # built once per device
        self._identity_sizes: dict[GpuInfo, int] = {}
        self._head = head
        self._now_ns = now_ns
        self._hardware = hardware
        # Devices whose binding is still to be signed, by key; None before the first record.
        self._unbound: dict[tuple[str, str], GpuInfo] | None = None
        self._resumed_after_ns = resumed_after_ns
        self._unattributed_id = unattributed_id  # the node's job for work no job claims
        self._unattributed_account = unattributed_account
        self._seen: set[tuple[str, str]] = set()  # devices that had their restart gap
        self._limits = limits
        self.max_record_bytes = max_record_bytes
        self._payload_budget = self._largest_payload(max_record_bytes)
        # The header of any record this builder signs, at its largest (10-byte varints).
        self._header_bound = self._header(2**64 - 1, bytes(32), -1).ByteSize()
        self.folded_intervals = 0  # intervals whose smallest jobs went to the unattributed job

    @property
    def head(self) -> ChainHead:
        return self._head

    def build(
        self,
        readings: Sequence[GpuReading],
        windows: Sequence[JobWindow],
        gaps: Sequence[pb.Gap] = (),
    ) -> Envelope:
        """Sign one record of `readings`, all attributed with `windows` (see `build_rounds`)."""
        return self.build_rounds([(readings, windows)], gaps)

    def build_rounds(
        self,
        rounds: Sequence[tuple[Sequence[GpuReading], Sequence[JobWindow]]],
        gaps: Sequence[pb.Gap] = (),
    ) -> Envelope:
        """`build_records` for a batch that fits one record; ValueError, with nothing signed,
        for one that does not (tests and tools that know their batches are small)."""
        items, devices, fresh = self._items(rounds, gaps)
        att, end, bound = self._fill(items, 0, devices)
        if end < len(items):
            raise ValueError(
                f"the batch needs more than one record of {self.max_record_bytes} bytes; "
                "use build_records"
            )
        self._seen.update(fresh)
        return self._sign(att, bound)

    def build_records(
        self,
        rounds: Sequence[tuple[Sequence[GpuReading], Sequence[JobWindow]]],
        gaps: Sequence[pb.Gap] = (),
    ) -> list[Envelope]:
        """Sign the records of several sampling rounds, in chain order: one, or as many
        consecutive ones as it takes to keep each within `max_record_bytes`. Each round's
        readings are attributed with the windows its attribution sources gave right after it
        (a job that ended between two rounds claims nothing of the later one). `gaps` name
        devices by their `batch_devices` slot."""
        items, devices, fresh = self._items(rounds, gaps)
        self._seen.update(fresh)
        out: list[Envelope] = []
        start = 0
        while start < len(items) or not out:
            att, start, bound = self._fill(items, start, devices)
            out.append(self._sign(att, bound))
        return out

    # -- what a batch holds -----------------------------------------------------------------
    def _items(
        self,
        rounds: Sequence[tuple[Sequence[GpuReading], Sequence[JobWindow]]],
        gaps: Sequence[pb.Gap],
    ) -> tuple[list[_Item], list[GpuInfo], list[tuple[str, str]]]:
        """The batch's gaps (those given, then restart gaps), then each reading in order: an
        interval, or a gap when it was not measured. With the batch's devices and those that
        had no restart gap yet."""
        readings = [r for round_readings, _ in rounds for r in round_readings]
        devices = batch_devices(readings)
        fresh = [g for g in devices if device_key(g) not in self._seen]
        items = []
        for g in [*gaps, *restart_gaps(self._resumed_after_ns, readings, fresh)]:
            if g.gpu >= len(devices):
                raise ValueError(f"gap names device #{g.gpu}; the batch has {len(devices)}")
            copy = pb.Gap()
            copy.CopyFrom(g)
            items.append(_Item.of(devices[g.gpu], copy))
        for round_readings, windows in rounds:
            for r in round_readings:
                items.append(self._reading_item(r, windows))
        return items, devices, [device_key(g) for g in fresh]

    def _reading_item(self, r: GpuReading, windows: Sequence[JobWindow]) -> _Item:
        if r.error is not None:
            return _Item.of(
                r.gpu,
                pb.Gap(
                    start_unix_ns=r.start_ns,
                    end_unix_ns=r.end_ns,
                    reason=GAP_REASON[r.cause],
                    detail=as_text(r.error, _DETAIL_CHARS),
                ),
            )
        shares = reading_attributions(r, windows, self._unattributed_id, self._unattributed_account)
        most = self._limits.max_jobs_per_interval
        keep = len(shares) if len(shares) <= most else most - 1  # room for the unattributed
        while True:
            item = _Item.of(
                r.gpu,
                self._interval(
                    r, fold_jobs(shares, keep, self._unattributed_id, self._unattributed_account)
                ),
            )
            if keep == 0 or self._fits_alone(item):
                break
            keep -= 1
        if keep < len(shares):
            self.folded_intervals += 1
            if self.folded_intervals % _FOLD_LOG_EVERY == 1:
                log.warning(
                    "GPU %s: %d jobs shared an interval; the %d smallest shares went to %s to "
                    "keep the record within %d bytes and %d jobs (%d interval(s) so far)",
                    r.gpu.uuid,
                    len(shares),
                    len(shares) - keep,
                    self._unattributed_id,
                    self.max_record_bytes,
                    self._limits.max_jobs_per_interval,
                    self.folded_intervals,
                )
        return item

    def _interval(self, r: GpuReading, shares: Sequence[Attribution]) -> pb.GpuInterval:
        has_gpm = r.pipe_busy is not None
        return make_interval(
            gpu_index=0,  # set where the record places it
            counters=r.counters(),
            method=method_for(r.gpu.cc, has_gpm),
            start_ns=r.start_ns,
            end_ns=r.end_ns,
            attributions=shares,
            energy_mj=r.energy_mj or 0,
            clock_samples=r.clock_samples,
            utilization_centipercent=0 if has_gpm else utilization_centipercent(r.utilization),
        )

    # -- sizes ------------------------------------------------------------------------------
    def _largest_payload(self, max_envelope: int) -> int:
        """The largest payload whose envelope, signed by this signer, is `max_envelope` bytes
        or fewer (the envelope is the payload field plus a fixed type and signature)."""
        signature = self._signer.sign(b"size probe")  # its length, not its value
        fixed = len(Envelope(b"", PAYLOAD_TYPE, ((self._key_id, signature),)).to_bytes())
        room = max_envelope - fixed
        fits = [p for v in range(1, 6) if (p := room - 1 - v) >= 0 and varint_bytes(p) <= v]
        return max(fits, default=0)

    def _fits_alone(self, item: _Item) -> bool:
        """Whether `item` fits a record of its own (at any slot)."""
        need = self._header_bound + self._identity_bytes(item.device)
        return need + field_bytes(item.size + 2) <= self._payload_budget

    def _identity_bytes(self, device: GpuInfo) -> int:
        """Bytes a device's identity takes in a record."""
        size = self._identity_sizes.get(device)
        if size is None:
            size = self._identity_sizes[device] = field_bytes(self._identity(device).ByteSize())
        return size

    # -- one record -------------------------------------------------------------------------
    def _header(self, sequence: int, previous: bytes, signed_at_ns: int) -> pb.Attestation:
        return pb.Attestation(
            node_id=self._node_id,
            key_id=self._key_id,
            agent_version=flopwatch.__version__,
            flop_model_version=MODEL_VERSION,
            sequence=sequence,
            previous_digest=previous,
            cluster=self._cluster,
            signed_at_unix_ns=signed_at_ns,
        )

    def _fill(
        self, items: Sequence[_Item], start: int, devices: Sequence[GpuInfo]
    ) -> tuple[pb.Attestation, int, _Bound | None]:
        """The next record: items from `start` while they fit and, after its first item, the
        bindings still to sign that fit. Returns it unsigned, where its items end, and what
        it did with bindings (None: none asked for). Changes no state but the items' slots."""
        att = self._header(self._head.sequence + 1, self._head.digest, self._now_ns())
        draft = _Draft(att, self._payload_budget, self._limits, self._identity_bytes)
        end = start
        bound: _Bound | None = None
        while end < len(items) and draft.add_item(items[end]):
            end += 1
            if end == start + 1 and (self._unbound is None or self._unbound):
                # Bindings ride right after the first item, over this record's nonce.
                nonce = binding_nonce(att.key_id, att.sequence, att.previous_digest)
                answers = self._binding_answers(nonce, devices)
                placed = [
                    device_key(a.gpu)
                    for a in answers
                    if draft.add_binding(a.gpu, binding_message(a, 0, nonce))
                ]
                bound = _Bound({device_key(a.gpu): a.gpu for a in answers}, placed)
        if end == start < len(items):
            raise ConfigError(
                f"one GPU-interval of {items[start].device.uuid} does not fit a record of "
                f"{self.max_record_bytes} bytes; raise max_record_bytes"
            )
        draft.finish(self._identity)
        return att, end, bound

    def _binding_answers(self, nonce: bytes, devices: Sequence[GpuInfo]) -> list[HardwareBinding]:
        """The hardware's bindings over `nonce` of the devices still to bind (on the first
        record: all). Without `hardware`, "not supported" for each physical GPU of `devices`."""
        if self._hardware is not None:
            answers = list(self._hardware.hardware_bindings(nonce))
        else:
            physical: dict[str, GpuInfo] = {}
            for g in devices if self._unbound is None else self._unbound.values():
                physical.setdefault(g.uuid, g)
            answers = [
                HardwareBinding(g, BindingStatus.NOT_SUPPORTED, "backend has no hardware binding")
                for g in physical.values()
            ]
        if self._unbound is not None:
            answers = [a for a in answers if device_key(a.gpu) in self._unbound]
        return answers

    def _sign(self, att: pb.Attestation, bound: _Bound | None) -> Envelope:
        env = Envelope.sign(att.SerializeToString(deterministic=True), self._signer)
        self._head = ChainHead(sequence=att.sequence, digest=env.digest)
        if bound is not None:  # bindings not answered now are not asked for again
            self._unbound = {k: g for k, g in bound.answered.items() if k not in bound.placed}
        return env

    def _identity(self, g: GpuInfo) -> pb.GpuIdentity:
        msg = self._identities.get(g)
        if msg is None:
            msg = self._identities[g] = gpu_identity(g)
        return msg
