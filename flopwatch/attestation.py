"""The attestation payload: building it (agent) and reading it back (collector, verifier).

Generated protobuf classes stay at this edge. `make_interval` is the only place figures are put
into a record and the record verifier (`flopwatch.verify.record`) the only place they are
checked, and both compute them with the FLOP model's `DeviceModel.figures`, so signer and
verifier cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from flopwatch.attribution import Attribution
from flopwatch.errors import VerificationError
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.model import Counters, Pipe, Precision
from flopwatch.model.device import device_model
from flopwatch.model.figures import Method
from flopwatch.runs import WorkloadClass
from flopwatch.v1 import attestation_pb2 as pb

PRECISION_TO_PROTO = {
    Precision.UNSPECIFIED: pb.PRECISION_UNSPECIFIED,
    Precision.BF16: pb.PRECISION_BF16,
    Precision.FP16: pb.PRECISION_FP16,
    Precision.TF32: pb.PRECISION_TF32,
    Precision.FP8: pb.PRECISION_FP8,
    Precision.FP32: pb.PRECISION_FP32,
    Precision.FP64: pb.PRECISION_FP64,
}
PRECISION_FROM_PROTO = {v: k for k, v in PRECISION_TO_PROTO.items()}
WORKLOAD_CLASS_TO_PROTO = {
    WorkloadClass.UNKNOWN: pb.WORKLOAD_CLASS_UNSPECIFIED,
    WorkloadClass.PRETRAINING: pb.WORKLOAD_CLASS_PRETRAINING,
    WorkloadClass.FINE_TUNING: pb.WORKLOAD_CLASS_FINE_TUNING,
    WorkloadClass.REINFORCEMENT_LEARNING: pb.WORKLOAD_CLASS_REINFORCEMENT_LEARNING,
    WorkloadClass.SYNTHETIC_DATA: pb.WORKLOAD_CLASS_SYNTHETIC_DATA,
    WorkloadClass.EVALUATION: pb.WORKLOAD_CLASS_EVALUATION,
    WorkloadClass.INFERENCE: pb.WORKLOAD_CLASS_INFERENCE,
}
WORKLOAD_CLASS_FROM_PROTO = {v: k for k, v in WORKLOAD_CLASS_TO_PROTO.items()}
METHOD_TO_PROTO = {
    Method.GPM: pb.METHOD_GPM,
    Method.NVML_UTILIZATION: pb.METHOD_NVML_UTILIZATION,
    Method.UNKNOWN_RATE: pb.METHOD_UNKNOWN_RATE,
}
METHOD_FROM_PROTO = {v: k for k, v in METHOD_TO_PROTO.items()}
_PIPE_FIELDS = {p: p.value for p in Pipe}


def active_of(iv: pb.GpuInterval) -> list[tuple[Pipe, int]]:
    """The pipes that ran in the interval, with their active SM-cycles."""
    cycles = iv.active_sm_cycles
    return [(p, n) for p, f in _PIPE_FIELDS.items() if (n := getattr(cycles, f))]


def counters_of(gpu: pb.GpuIdentity, iv: pb.GpuInterval) -> Counters:
    return Counters(
        cc=(gpu.cc_major, gpu.cc_minor),
        sm_count=gpu.sm_count,
        max_sm_clock_mhz=gpu.max_sm_clock_mhz,
        duration_ns=iv.end_unix_ns - iv.start_unix_ns,
        elapsed_sm_cycles=iv.elapsed_sm_cycles,
        # Idle pipes are left out: they add nothing to any figure (Counters reads them as 0).
        active=dict(active_of(iv)),
    )


def make_interval(
    *,
    gpu_index: int,
    counters: Counters,
    method: Method,
    start_ns: int,
    end_ns: int,
    attributions: Sequence[Attribution],
    energy_mj: int = 0,
    clock_samples: int = 0,
    utilization_centipercent: int = 0,
) -> pb.GpuInterval:
    """One GPU interval with its raw counters and the figures the model derives from them."""
    model = device_model(counters.cc, counters.sm_count, counters.max_sm_clock_mhz)
    figures = model.figures(
        counters.duration_ns,
        counters.elapsed_sm_cycles,
        list(counters.active.items()),
        method=method,
        shares=[(a.share_ppm, a.precision) for a in attributions],
        utilization_centipercent=utilization_centipercent,
    )
    jobs = [
        pb.JobShare(
            job_id=a.job_id,
            share_ppm=a.share_ppm,
            declared_precision=PRECISION_TO_PROTO[a.precision],
            source=a.source,
            flops_estimate=f.flops_estimate,
            flops_upper=f.flops_upper,
            run=a.run,
            account=a.account,
            workload_class=WORKLOAD_CLASS_TO_PROTO[a.workload_class],
            run_source=a.run_source,
            run_parent=a.run_parent,
        )
        for a, f in zip(attributions, figures.jobs, strict=True)
    ]
    return pb.GpuInterval(
        gpu=gpu_index,
        start_unix_ns=start_ns,
        end_unix_ns=end_ns,
        active_sm_cycles=pb.PipeCycles(
            **{f: counters.active_cycles(p) for p, f in _PIPE_FIELDS.items()}
        ),
        elapsed_sm_cycles=counters.elapsed_sm_cycles,
        energy_mj=energy_mj,
        jobs=jobs,
        flops_estimate=figures.flops_estimate,
        flops_upper=figures.flops_upper,
        method=METHOD_TO_PROTO[method],
        clock_samples=clock_samples,
        utilization_centipercent=utilization_centipercent,
    )


def parse_payload(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> pb.Attestation:
    """Decode an attestation payload and enforce the count limits."""
    msg = pb.Attestation()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise VerificationError("malformed", f"payload is not a valid Attestation: {e}") from e
    if len(msg.gpus) > limits.max_gpus_per_attestation:
        raise VerificationError("too_many", f"{len(msg.gpus)} GPUs in one attestation")
    if len(msg.intervals) > limits.max_intervals_per_attestation:
        raise VerificationError("too_many", f"{len(msg.intervals)} intervals in one attestation")
    if len(msg.gaps) > limits.max_gaps_per_attestation:
        raise VerificationError("too_many", f"{len(msg.gaps)} gaps in one attestation")
    return msg


def gpu_key(uuid: str, mig_instance: str) -> str:
    """Names one measured device: a whole GPU, or one MIG instance of it.

    MIG instances of one GPU share its uuid and run at the same time, so overlap is judged per
    instance, not per uuid.
    """
    return f"{uuid}/{mig_instance}" if mig_instance else uuid


class MeasuredInterval(NamedTuple):
    """One GPU interval of a verified record, with the whole device's figures."""

    device: str  # `gpu_key`: the GPU uuid, or uuid/MIG-instance
    gpu_uuid: str
    start_ns: int
    end_ns: int
    flops_estimate: int  # the jobs' estimates summed
    flops_upper: int  # the whole device's upper bound, once however many jobs shared it


class JobContribution(NamedTuple):
    """One job's figures from one GPU interval of a verified record, with the job's run (its
    own id where the record declares none), account (empty: none known) and class."""

    job_id: str
    gpu_uuid: str
    start_ns: int
    end_ns: int
    flops_estimate: int
    flops_upper: int
    run: str = ""
    account: str = ""
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN


@dataclass(frozen=True)
class GapInfo:
    gpu_uuid: str
    start_ns: int
    end_ns: int
    reason: str
    detail: str
