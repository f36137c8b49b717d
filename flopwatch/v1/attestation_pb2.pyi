from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_GPM: _ClassVar[Method]
    METHOD_NVML_UTILIZATION: _ClassVar[Method]
    METHOD_UNKNOWN_RATE: _ClassVar[Method]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_TF32: _ClassVar[Precision]
    PRECISION_FP8: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_FP64: _ClassVar[Precision]

class WorkloadClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKLOAD_CLASS_UNSPECIFIED: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_PRETRAINING: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_FINE_TUNING: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_REINFORCEMENT_LEARNING: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_SYNTHETIC_DATA: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_EVALUATION: _ClassVar[WorkloadClass]
    WORKLOAD_CLASS_INFERENCE: _ClassVar[WorkloadClass]

class GapReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GAP_REASON_UNSPECIFIED: _ClassVar[GapReason]
    GAP_REASON_SAMPLING_ERROR: _ClassVar[GapReason]
    GAP_REASON_PROFILER_BUSY: _ClassVar[GapReason]
    GAP_REASON_AGENT_RESTART: _ClassVar[GapReason]
    GAP_REASON_SPOOL_OVERFLOW: _ClassVar[GapReason]
    GAP_REASON_SPOOL_CORRUPT: _ClassVar[GapReason]

class BindingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BINDING_STATUS_UNSPECIFIED: _ClassVar[BindingStatus]
    BINDING_STATUS_REPORT: _ClassVar[BindingStatus]
    BINDING_STATUS_NOT_SUPPORTED: _ClassVar[BindingStatus]
    BINDING_STATUS_CC_OFF: _ClassVar[BindingStatus]
    BINDING_STATUS_ERROR: _ClassVar[BindingStatus]
METHOD_UNSPECIFIED: Method
METHOD_GPM: Method
METHOD_NVML_UTILIZATION: Method
METHOD_UNKNOWN_RATE: Method
PRECISION_UNSPECIFIED: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
PRECISION_TF32: Precision
PRECISION_FP8: Precision
PRECISION_FP32: Precision
PRECISION_FP64: Precision
WORKLOAD_CLASS_UNSPECIFIED: WorkloadClass
WORKLOAD_CLASS_PRETRAINING: WorkloadClass
WORKLOAD_CLASS_FINE_TUNING: WorkloadClass
WORKLOAD_CLASS_REINFORCEMENT_LEARNING: WorkloadClass
WORKLOAD_CLASS_SYNTHETIC_DATA: WorkloadClass
WORKLOAD_CLASS_EVALUATION: WorkloadClass
WORKLOAD_CLASS_INFERENCE: WorkloadClass
GAP_REASON_UNSPECIFIED: GapReason
GAP_REASON_SAMPLING_ERROR: GapReason
GAP_REASON_PROFILER_BUSY: GapReason
GAP_REASON_AGENT_RESTART: GapReason
GAP_REASON_SPOOL_OVERFLOW: GapReason
GAP_REASON_SPOOL_CORRUPT: GapReason
BINDING_STATUS_UNSPECIFIED: BindingStatus
BINDING_STATUS_REPORT: BindingStatus
BINDING_STATUS_NOT_SUPPORTED: BindingStatus
BINDING_STATUS_CC_OFF: BindingStatus
BINDING_STATUS_ERROR: BindingStatus

class GpuIdentity(_message.Message):
    __slots__ = ("uuid", "serial", "name", "sm_count", "cc_major", "cc_minor", "max_sm_clock_mhz", "mig_instance", "index")
    UUID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SM_COUNT_FIELD_NUMBER: _ClassVar[int]
    CC_MAJOR_FIELD_NUMBER: _ClassVar[int]
    CC_MINOR_FIELD_NUMBER: _ClassVar[int]
    MAX_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MIG_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    serial: str
    name: str
    sm_count: int
    cc_major: int
    cc_minor: int
    max_sm_clock_mhz: int
    mig_instance: str
    index: int
    def __init__(self, uuid: _Optional[str] = ..., serial: _Optional[str] = ..., name: _Optional[str] = ..., sm_count: _Optional[int] = ..., cc_major: _Optional[int] = ..., cc_minor: _Optional[int] = ..., max_sm_clock_mhz: _Optional[int] = ..., mig_instance: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class PipeCycles(_message.Message):
    __slots__ = ("hmma", "imma", "dfma_tensor", "fp64", "fp32", "fp16")
    HMMA_FIELD_NUMBER: _ClassVar[int]
    IMMA_FIELD_NUMBER: _ClassVar[int]
    DFMA_TENSOR_FIELD_NUMBER: _ClassVar[int]
    FP64_FIELD_NUMBER: _ClassVar[int]
    FP32_FIELD_NUMBER: _ClassVar[int]
    FP16_FIELD_NUMBER: _ClassVar[int]
    hmma: int
    imma: int
    dfma_tensor: int
    fp64: int
    fp32: int
    fp16: int
    def __init__(self, hmma: _Optional[int] = ..., imma: _Optional[int] = ..., dfma_tensor: _Optional[int] = ..., fp64: _Optional[int] = ..., fp32: _Optional[int] = ..., fp16: _Optional[int] = ...) -> None: ...

class JobShare(_message.Message):
    __slots__ = ("job_id", "share_ppm", "declared_precision", "source", "flops_estimate", "flops_upper", "run", "account", "workload_class", "run_source", "run_parent")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_PPM_FIELD_NUMBER: _ClassVar[int]
    DECLARED_PRECISION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_CLASS_FIELD_NUMBER: _ClassVar[int]
    RUN_SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUN_PARENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    share_ppm: int
    declared_precision: Precision
    source: str
    flops_estimate: int
    flops_upper: int
    run: str
    account: str
    workload_class: WorkloadClass
    run_source: str
    run_parent: str
    def __init__(self, job_id: _Optional[str] = ..., share_ppm: _Optional[int] = ..., declared_precision: _Optional[_Union[Precision, str]] = ..., source: _Optional[str] = ..., flops_estimate: _Optional[int] = ..., flops_upper: _Optional[int] = ..., run: _Optional[str] = ..., account: _Optional[str] = ..., workload_class: _Optional[_Union[WorkloadClass, str]] = ..., run_source: _Optional[str] = ..., run_parent: _Optional[str] = ...) -> None: ...

class GpuInterval(_message.Message):
    __slots__ = ("gpu", "start_unix_ns", "end_unix_ns", "active_sm_cycles", "elapsed_sm_cycles", "energy_mj", "jobs", "flops_estimate", "flops_upper", "method", "clock_samples", "utilization_centipercent")
    GPU_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SM_CYCLES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SM_CYCLES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_CENTIPERCENT_FIELD_NUMBER: _ClassVar[int]
    gpu: int
    start_unix_ns: int
    end_unix_ns: int
    active_sm_cycles: PipeCycles
    elapsed_sm_cycles: int
    energy_mj: int
    jobs: _containers.RepeatedCompositeFieldContainer[JobShare]
    flops_estimate: int
    flops_upper: int
    method: Method
    clock_samples: int
    utilization_centipercent: int
    def __init__(self, gpu: _Optional[int] = ..., start_unix_ns: _Optional[int] = ..., end_unix_ns: _Optional[int] = ..., active_sm_cycles: _Optional[_Union[PipeCycles, _Mapping]] = ..., elapsed_sm_cycles: _Optional[int] = ..., energy_mj: _Optional[int] = ..., jobs: _Optional[_Iterable[_Union[JobShare, _Mapping]]] = ..., flops_estimate: _Optional[int] = ..., flops_upper: _Optional[int] = ..., method: _Optional[_Union[Method, str]] = ..., clock_samples: _Optional[int] = ..., utilization_centipercent: _Optional[int] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("gpu", "start_unix_ns", "end_unix_ns", "reason", "detail", "lost_sequence_first", "lost_sequence_last")
    GPU_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LOST_SEQUENCE_FIRST_FIELD_NUMBER: _ClassVar[int]
    LOST_SEQUENCE_LAST_FIELD_NUMBER: _ClassVar[int]
    gpu: int
    start_unix_ns: int
    end_unix_ns: int
    reason: GapReason
    detail: str
    lost_sequence_first: int
    lost_sequence_last: int
    def __init__(self, gpu: _Optional[int] = ..., start_unix_ns: _Optional[int] = ..., end_unix_ns: _Optional[int] = ..., reason: _Optional[_Union[GapReason, str]] = ..., detail: _Optional[str] = ..., lost_sequence_first: _Optional[int] = ..., lost_sequence_last: _Optional[int] = ...) -> None: ...

class GpuBinding(_message.Message):
    __slots__ = ("gpu", "status", "nonce", "report", "cec_report", "cert_chain", "detail")
    GPU_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    CEC_REPORT_FIELD_NUMBER: _ClassVar[int]
    CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    gpu: int
    status: BindingStatus
    nonce: bytes
    report: bytes
    cec_report: bytes
    cert_chain: bytes
    detail: str
    def __init__(self, gpu: _Optional[int] = ..., status: _Optional[_Union[BindingStatus, str]] = ..., nonce: _Optional[bytes] = ..., report: _Optional[bytes] = ..., cec_report: _Optional[bytes] = ..., cert_chain: _Optional[bytes] = ..., detail: _Optional[str] = ...) -> None: ...

class Attestation(_message.Message):
    __slots__ = ("node_id", "key_id", "agent_version", "flop_model_version", "sequence", "previous_digest", "cluster", "signed_at_unix_ns", "gpus", "intervals", "gaps", "bindings")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    agent_version: str
    flop_model_version: str
    sequence: int
    previous_digest: bytes
    cluster: str
    signed_at_unix_ns: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuIdentity]
    intervals: _containers.RepeatedCompositeFieldContainer[GpuInterval]
    gaps: _containers.RepeatedCompositeFieldContainer[Gap]
    bindings: _containers.RepeatedCompositeFieldContainer[GpuBinding]
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., flop_model_version: _Optional[str] = ..., sequence: _Optional[int] = ..., previous_digest: _Optional[bytes] = ..., cluster: _Optional[str] = ..., signed_at_unix_ns: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuIdentity, _Mapping]]] = ..., intervals: _Optional[_Iterable[_Union[GpuInterval, _Mapping]]] = ..., gaps: _Optional[_Iterable[_Union[Gap, _Mapping]]] = ..., bindings: _Optional[_Iterable[_Union[GpuBinding, _Mapping]]] = ...) -> None: ...
