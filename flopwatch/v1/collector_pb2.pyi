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
    __slots__ = ("job_prefix",)
    JOB_PREFIX_FIELD_NUMBER: _ClassVar[int]
    job_prefix: str
    def __init__(self, job_prefix: _Optional[str] = ...) -> None: ...

class JobTotal(_message.Message):
    __slots__ = ("job_id", "flops_estimate", "flops_upper", "first_start_unix_ns", "last_end_unix_ns", "gpu_intervals", "thresholds_crossed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_CROSSED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    flops_estimate: str
    flops_upper: str
    first_start_unix_ns: int
    last_end_unix_ns: int
    gpu_intervals: int
    thresholds_crossed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., gpu_intervals: _Optional[int] = ..., thresholds_crossed: _Optional[_Iterable[str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "flop_model_version", "alert_basis")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALERT_BASIS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobTotal]
    flop_model_version: str
    alert_basis: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobTotal, _Mapping]]] = ..., flop_model_version: _Optional[str] = ..., alert_basis: _Optional[str] = ...) -> None: ...
