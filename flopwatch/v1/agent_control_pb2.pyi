from flopwatch.v1 import attestation_pb2 as _attestation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartJobRequest(_message.Message):
    __slots__ = ("job", "source", "gpus", "precision", "run", "account", "workload_class", "run_parent")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_CLASS_FIELD_NUMBER: _ClassVar[int]
    RUN_PARENT_FIELD_NUMBER: _ClassVar[int]
    job: str
    source: str
    gpus: _containers.RepeatedScalarFieldContainer[str]
    precision: _attestation_pb2.Precision
    run: str
    account: str
    workload_class: _attestation_pb2.WorkloadClass
    run_parent: str
    def __init__(self, job: _Optional[str] = ..., source: _Optional[str] = ..., gpus: _Optional[_Iterable[str]] = ..., precision: _Optional[_Union[_attestation_pb2.Precision, str]] = ..., run: _Optional[str] = ..., account: _Optional[str] = ..., workload_class: _Optional[_Union[_attestation_pb2.WorkloadClass, str]] = ..., run_parent: _Optional[str] = ...) -> None: ...

class RegisteredJob(_message.Message):
    __slots__ = ("job_id", "source", "gpu_uuids", "precision", "start_unix_ns", "end_unix_ns", "run", "account", "workload_class", "run_parent")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_CLASS_FIELD_NUMBER: _ClassVar[int]
    RUN_PARENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    source: str
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    precision: _attestation_pb2.Precision
    start_unix_ns: int
    end_unix_ns: int
    run: str
    account: str
    workload_class: _attestation_pb2.WorkloadClass
    run_parent: str
    def __init__(self, job_id: _Optional[str] = ..., source: _Optional[str] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., precision: _Optional[_Union[_attestation_pb2.Precision, str]] = ..., start_unix_ns: _Optional[int] = ..., end_unix_ns: _Optional[int] = ..., run: _Optional[str] = ..., account: _Optional[str] = ..., workload_class: _Optional[_Union[_attestation_pb2.WorkloadClass, str]] = ..., run_parent: _Optional[str] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: RegisteredJob
    def __init__(self, job: _Optional[_Union[RegisteredJob, _Mapping]] = ...) -> None: ...

class EndJobRequest(_message.Message):
    __slots__ = ("job", "source")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    job: str
    source: str
    def __init__(self, job: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class EndJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: RegisteredJob
    def __init__(self, job: _Optional[_Union[RegisteredJob, _Mapping]] = ...) -> None: ...

class ListRegisteredJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRegisteredJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[RegisteredJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[RegisteredJob, _Mapping]]] = ...) -> None: ...
