"""Turn GPU readings into signed, chained attestation envelopes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flopwatch
from agent.backends.base import GpuInfo, GpuReading
from flopwatch.attestation import make_interval
from flopwatch.attribution import Attribution, JobWindow, attribute
from flopwatch.dsse import Envelope, Signer
from flopwatch.model import MODEL_VERSION
from flopwatch.model.figures import method_for
from flopwatch.v1 import attestation_pb2 as pb


@dataclass
class ChainHead:
    """Sequence and digest of the last record signed with this key (0, b"" before the first)."""

    sequence: int = 0
    digest: bytes = b""


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


def reading_attributions(reading: GpuReading, windows: Sequence[JobWindow]) -> list[Attribution]:
    return attribute(
        reading.start_ns,
        reading.end_ns,
        [(p.pid, p.share) for p in reading.processes],
        windows,
    )


class RecordBuilder:
    """Builds one attestation per batch of readings, signs it and advances the chain head."""

    def __init__(
        self,
        *,
        node_id: str,
        cluster: str,
        signer: Signer,
        head: ChainHead,
        now_ns: Callable[[], int],
    ) -> None:
        self._node_id = node_id
        self._cluster = cluster
        self._signer = signer
        self._head = head
        self._now_ns = now_ns

    @property
    def head(self) -> ChainHead:
        return self._head

    def build(
        self,
        readings: Sequence[GpuReading],
        windows: Sequence[JobWindow],
        gaps: Sequence[pb.Gap] = (),
    ) -> Envelope:
        gpus: list[GpuInfo] = []
        index: dict[str, int] = {}

        def gpu_slot(g: GpuInfo) -> int:
            if g.uuid not in index:
                index[g.uuid] = len(gpus)
                gpus.append(g)
            return index[g.uuid]

        intervals = []
        gap_msgs = list(gaps)
        for r in readings:
            slot = gpu_slot(r.gpu)
            if r.error is not None:
                gap_msgs.append(
                    pb.Gap(
                        gpu=slot,
                        start_unix_ns=r.start_ns,
                        end_unix_ns=r.end_ns,
                        reason=pb.GAP_REASON_SAMPLING_ERROR,
                        detail=r.error[:200],
                    )
                )
                continue
            has_gpm = r.pipe_busy is not None
            util = round((r.utilization or 0.0) * 10_000) if not has_gpm else 0
            intervals.append(
                make_interval(
                    gpu_index=slot,
                    counters=r.counters(),
                    method=method_for(r.gpu.cc, has_gpm),
                    start_ns=r.start_ns,
                    end_ns=r.end_ns,
                    attributions=reading_attributions(r, windows),
                    energy_mj=r.energy_mj or 0,
                    clock_samples=r.clock_samples,
                    utilization_centipercent=min(util, 10_000),
                )
            )
        seq = self._head.sequence + 1
        att = pb.Attestation(
            node_id=self._node_id,
            key_id=self._signer.key_id,
            agent_version=flopwatch.__version__,
            flop_model_version=MODEL_VERSION,
            sequence=seq,
            previous_digest=self._head.digest,
            cluster=self._cluster,
            signed_at_unix_ns=self._now_ns(),
            gpus=[gpu_identity(g) for g in gpus],
            intervals=intervals,
            gaps=gap_msgs,
        )
        env = Envelope.sign(att.SerializeToString(deterministic=True), self._signer)
        self._head = ChainHead(sequence=seq, digest=env.digest)
        return env
