from flopwatch.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_ACCEPTED: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]
    ACK_STATUS_RETRY: _ClassVar[AckStatus]
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_ACCEPTED: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ACK_STATUS_REJECTED: AckStatus
ACK_STATUS_RETRY: AckStatus

class SubmitRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("key_id", "sequence", "status", "reason", "detail")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    sequence: int
    status: AckStatus
    reason: str
    detail: str
    def __init__(self, key_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[AckStatus, str]] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[Ack]
    def __init__(self, acks: _Optional[_Iterable[_Union[Ack, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("job_prefix", "page_size", "page_token")
    JOB_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_prefix: str
    page_size: int
    page_token: str
    def __init__(self, job_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class JobTotal(_message.Message):
    __slots__ = ("job_id", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals", "thresholds_crossed", "gpu_seconds", "energy_kwh")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_CROSSED_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    thresholds_crossed: _containers.RepeatedScalarFieldContainer[str]
    gpu_seconds: float
    energy_kwh: float
    def __init__(self, job_id: _Optional[str] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., thresholds_crossed: _Optional[_Iterable[str]] = ..., gpu_seconds: _Optional[float] = ..., energy_kwh: _Optional[float] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "flop_model_version", "alert_basis", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALERT_BASIS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobTotal]
    flop_model_version: str
    alert_basis: str
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobTotal, _Mapping]]] = ..., flop_model_version: _Optional[str] = ..., alert_basis: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class JobGpu(_message.Message):
    __slots__ = ("key_id", "node_id", "gpu_uuid", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    node_id: str
    gpu_uuid: str
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    def __init__(self, key_id: _Optional[str] = ..., node_id: _Optional[str] = ..., gpu_uuid: _Optional[str] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ...) -> None: ...

class ListJobGpusRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobGpusResponse(_message.Message):
    __slots__ = ("job", "gpus", "next_page_token", "flop_model_version", "alert_basis")
    JOB_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALERT_BASIS_FIELD_NUMBER: _ClassVar[int]
    job: JobTotal
    gpus: _containers.RepeatedCompositeFieldContainer[JobGpu]
    next_page_token: str
    flop_model_version: str
    alert_basis: str
    def __init__(self, job: _Optional[_Union[JobTotal, _Mapping]] = ..., gpus: _Optional[_Iterable[_Union[JobGpu, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., flop_model_version: _Optional[str] = ..., alert_basis: _Optional[str] = ...) -> None: ...

class NodeSummary(_message.Message):
    __slots__ = ("key_id", "node_id", "status", "enrolled_at_unix_ns", "revoked_at_unix_ns", "last_record_unix_ns", "silent", "flops_estimate", "flops_upper", "gpus", "gpu_intervals", "pending_seen_unix_ns", "clock_ahead", "clock_ahead_seconds", "clock_ahead_at_unix_ns")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_RECORD_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    PENDING_SEEN_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_AHEAD_FIELD_NUMBER: _ClassVar[int]
    CLOCK_AHEAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_AHEAD_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    node_id: str
    status: str
    enrolled_at_unix_ns: int
    revoked_at_unix_ns: int
    last_record_unix_ns: int
    silent: bool
    flops_estimate: str
    flops_upper: str
    gpus: int
    gpu_intervals: int
    pending_seen_unix_ns: int
    clock_ahead: bool
    clock_ahead_seconds: float
    clock_ahead_at_unix_ns: int
    def __init__(self, key_id: _Optional[str] = ..., node_id: _Optional[str] = ..., status: _Optional[str] = ..., enrolled_at_unix_ns: _Optional[int] = ..., revoked_at_unix_ns: _Optional[int] = ..., last_record_unix_ns: _Optional[int] = ..., silent: _Optional[bool] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., gpus: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., pending_seen_unix_ns: _Optional[int] = ..., clock_ahead: _Optional[bool] = ..., clock_ahead_seconds: _Optional[float] = ..., clock_ahead_at_unix_ns: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token", "silent_after_seconds", "flop_model_version")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SILENT_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeSummary]
    next_page_token: str
    silent_after_seconds: float
    flop_model_version: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., silent_after_seconds: _Optional[float] = ..., flop_model_version: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("account", "run_prefix", "page_size", "page_token")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RUN_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account: str
    run_prefix: str
    page_size: int
    page_token: str
    def __init__(self, account: _Optional[str] = ..., run_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class RunTotal(_message.Message):
    __slots__ = ("account", "run", "classes", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals", "gpu_seconds", "energy_kwh", "parent_account", "parent_run", "parent_collector", "inherited_flops_estimate", "inherited_flops_upper", "cumulative_flops_estimate", "cumulative_flops_upper", "derived_over_third", "recent_flops_estimate", "recent_flops_upper", "recent_first_start_unix_ns", "recent_last_end_unix_ns")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    PARENT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_FIELD_NUMBER: _ClassVar[int]
    PARENT_COLLECTOR_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    DERIVED_OVER_THIRD_FIELD_NUMBER: _ClassVar[int]
    RECENT_FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    RECENT_FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RECENT_LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    account: str
    run: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    gpu_seconds: float
    energy_kwh: float
    parent_account: str
    parent_run: str
    parent_collector: str
    inherited_flops_estimate: str
    inherited_flops_upper: str
    cumulative_flops_estimate: str
    cumulative_flops_upper: str
    derived_over_third: bool
    recent_flops_estimate: str
    recent_flops_upper: str
    recent_first_start_unix_ns: int
    recent_last_end_unix_ns: int
    def __init__(self, account: _Optional[str] = ..., run: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., gpu_seconds: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., parent_account: _Optional[str] = ..., parent_run: _Optional[str] = ..., parent_collector: _Optional[str] = ..., inherited_flops_estimate: _Optional[str] = ..., inherited_flops_upper: _Optional[str] = ..., cumulative_flops_estimate: _Optional[str] = ..., cumulative_flops_upper: _Optional[str] = ..., derived_over_third: _Optional[bool] = ..., recent_flops_estimate: _Optional[str] = ..., recent_flops_upper: _Optional[str] = ..., recent_first_start_unix_ns: _Optional[int] = ..., recent_last_end_unix_ns: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token", "flop_model_version")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunTotal]
    next_page_token: str
    flop_model_version: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunTotal, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., flop_model_version: _Optional[str] = ...) -> None: ...

class WindowTotal(_message.Message):
    __slots__ = ("days", "start_unix_ns", "end_unix_ns", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals", "gpu_seconds", "energy_kwh")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    days: int
    start_unix_ns: int
    end_unix_ns: int
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    gpu_seconds: float
    energy_kwh: float
    def __init__(self, days: _Optional[int] = ..., start_unix_ns: _Optional[int] = ..., end_unix_ns: _Optional[int] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., gpu_seconds: _Optional[float] = ..., energy_kwh: _Optional[float] = ...) -> None: ...

class AccountTotal(_message.Message):
    __slots__ = ("account", "classes", "runs", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals", "gpu_seconds", "energy_kwh", "windows")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    account: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    runs: int
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    gpu_seconds: float
    energy_kwh: float
    windows: _containers.RepeatedCompositeFieldContainer[WindowTotal]
    def __init__(self, account: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., runs: _Optional[int] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., gpu_seconds: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., windows: _Optional[_Iterable[_Union[WindowTotal, _Mapping]]] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("account_prefix", "page_size", "page_token")
    ACCOUNT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account_prefix: str
    page_size: int
    page_token: str
    def __init__(self, account_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts", "next_page_token", "flop_model_version")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[AccountTotal]
    next_page_token: str
    flop_model_version: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[AccountTotal, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., flop_model_version: _Optional[str] = ...) -> None: ...

class GetTreeHeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTreeHeadResponse(_message.Message):
    __slots__ = ("tree_head",)
    TREE_HEAD_FIELD_NUMBER: _ClassVar[int]
    tree_head: _envelope_pb2.Envelope
    def __init__(self, tree_head: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ...) -> None: ...

class RecordRef(_message.Message):
    __slots__ = ("key_id", "sequence")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    sequence: int
    def __init__(self, key_id: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("leaf_index", "record", "tree_size")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    record: RecordRef
    tree_size: int
    def __init__(self, leaf_index: _Optional[int] = ..., record: _Optional[_Union[RecordRef, _Mapping]] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("leaf_index", "tree_size", "hashes")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("old_size", "new_size")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("old_size", "new_size", "hashes")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...
