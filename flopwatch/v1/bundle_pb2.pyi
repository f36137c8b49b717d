from flopwatch.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampledScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_JOB: _ClassVar[SampledScope]
    SCOPE_RUN: _ClassVar[SampledScope]
SCOPE_JOB: SampledScope
SCOPE_RUN: SampledScope

class TreeHead(_message.Message):
    __slots__ = ("tree_size", "root_hash", "timestamp_unix_ns", "collector_public_key")
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    tree_size: int
    root_hash: bytes
    timestamp_unix_ns: int
    collector_public_key: bytes
    def __init__(self, tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., timestamp_unix_ns: _Optional[int] = ..., collector_public_key: _Optional[bytes] = ...) -> None: ...

class NodeKey(_message.Message):
    __slots__ = ("key_id", "node_id", "public_key", "status", "enrolled_at_unix_ns", "revoked_at_unix_ns", "revoked_at_tree_size")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    node_id: str
    public_key: bytes
    status: str
    enrolled_at_unix_ns: int
    revoked_at_unix_ns: int
    revoked_at_tree_size: int
    def __init__(self, key_id: _Optional[str] = ..., node_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., status: _Optional[str] = ..., enrolled_at_unix_ns: _Optional[int] = ..., revoked_at_unix_ns: _Optional[int] = ..., revoked_at_tree_size: _Optional[int] = ...) -> None: ...

class JobClaim(_message.Message):
    __slots__ = ("job_id", "flop_model_version", "flops_estimate", "flops_upper", "gpu_intervals", "first_start_unix_ns", "last_end_unix_ns", "leaf_indices", "nodes", "tree_size", "root_hash", "created_unix_ns")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    FIRST_START_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDICES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    flop_model_version: str
    flops_estimate: str
    flops_upper: str
    gpu_intervals: int
    first_start_unix_ns: int
    last_end_unix_ns: int
    leaf_indices: _containers.RepeatedScalarFieldContainer[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeKey]
    tree_size: int
    root_hash: bytes
    created_unix_ns: int
    def __init__(self, job_id: _Optional[str] = ..., flop_model_version: _Optional[str] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., gpu_intervals: _Optional[int] = ..., first_start_unix_ns: _Optional[int] = ..., last_end_unix_ns: _Optional[int] = ..., leaf_indices: _Optional[_Iterable[int]] = ..., nodes: _Optional[_Iterable[_Union[NodeKey, _Mapping]]] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., created_unix_ns: _Optional[int] = ...) -> None: ...

class LoggedEnvelope(_message.Message):
    __slots__ = ("leaf_index", "envelope", "inclusion_proof")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    envelope: bytes
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, leaf_index: _Optional[int] = ..., envelope: _Optional[bytes] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("old_size", "new_size", "hashes")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("media_type", "tree_head", "claim", "entries", "consistency")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TREE_HEAD_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    tree_head: _envelope_pb2.Envelope
    claim: _envelope_pb2.Envelope
    entries: _containers.RepeatedCompositeFieldContainer[LoggedEnvelope]
    consistency: _containers.RepeatedCompositeFieldContainer[ConsistencyProof]
    def __init__(self, media_type: _Optional[str] = ..., tree_head: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., claim: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[LoggedEnvelope, _Mapping]]] = ..., consistency: _Optional[_Iterable[_Union[ConsistencyProof, _Mapping]]] = ...) -> None: ...

class ArchiveHeader(_message.Message):
    __slots__ = ("media_type", "tree_head", "nodes", "before_unix_ns", "entries")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TREE_HEAD_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BEFORE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    tree_head: _envelope_pb2.Envelope
    nodes: _containers.RepeatedCompositeFieldContainer[NodeKey]
    before_unix_ns: int
    entries: int
    def __init__(self, media_type: _Optional[str] = ..., tree_head: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeKey, _Mapping]]] = ..., before_unix_ns: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class SampledClaim(_message.Message):
    __slots__ = ("job_id", "flop_model_version", "flops_estimate", "flops_upper", "gpu_intervals", "gpu_ns", "records", "sum_root", "nodes", "tree_size", "root_hash", "created_unix_ns", "samples", "probes", "challenge", "scope", "run", "account")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FLOP_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLOPS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_UPPER_FIELD_NUMBER: _ClassVar[int]
    GPU_INTERVALS_FIELD_NUMBER: _ClassVar[int]
    GPU_NS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SUM_ROOT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    flop_model_version: str
    flops_estimate: str
    flops_upper: str
    gpu_intervals: int
    gpu_ns: int
    records: int
    sum_root: bytes
    nodes: _containers.RepeatedCompositeFieldContainer[NodeKey]
    tree_size: int
    root_hash: bytes
    created_unix_ns: int
    samples: int
    probes: int
    challenge: bytes
    scope: SampledScope
    run: str
    account: str
    def __init__(self, job_id: _Optional[str] = ..., flop_model_version: _Optional[str] = ..., flops_estimate: _Optional[str] = ..., flops_upper: _Optional[str] = ..., gpu_intervals: _Optional[int] = ..., gpu_ns: _Optional[int] = ..., records: _Optional[int] = ..., sum_root: _Optional[bytes] = ..., nodes: _Optional[_Iterable[_Union[NodeKey, _Mapping]]] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., created_unix_ns: _Optional[int] = ..., samples: _Optional[int] = ..., probes: _Optional[int] = ..., challenge: _Optional[bytes] = ..., scope: _Optional[_Union[SampledScope, str]] = ..., run: _Optional[str] = ..., account: _Optional[str] = ...) -> None: ...

class SampledRecord(_message.Message):
    __slots__ = ("position", "leaf_index", "envelope", "inclusion_proof", "leaf_sums", "sum_path")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_SUMS_FIELD_NUMBER: _ClassVar[int]
    SUM_PATH_FIELD_NUMBER: _ClassVar[int]
    position: int
    leaf_index: int
    envelope: bytes
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    leaf_sums: bytes
    sum_path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, position: _Optional[int] = ..., leaf_index: _Optional[int] = ..., envelope: _Optional[bytes] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., leaf_sums: _Optional[bytes] = ..., sum_path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LogProbe(_message.Message):
    __slots__ = ("leaf_index", "envelope", "inclusion_proof")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    envelope: bytes
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, leaf_index: _Optional[int] = ..., envelope: _Optional[bytes] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SampledReport(_message.Message):
    __slots__ = ("media_type", "tree_head", "claim", "records", "probes", "consistency")
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TREE_HEAD_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    tree_head: _envelope_pb2.Envelope
    claim: _envelope_pb2.Envelope
    records: _containers.RepeatedCompositeFieldContainer[SampledRecord]
    probes: _containers.RepeatedCompositeFieldContainer[LogProbe]
    consistency: _containers.RepeatedCompositeFieldContainer[ConsistencyProof]
    def __init__(self, media_type: _Optional[str] = ..., tree_head: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., claim: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., records: _Optional[_Iterable[_Union[SampledRecord, _Mapping]]] = ..., probes: _Optional[_Iterable[_Union[LogProbe, _Mapping]]] = ..., consistency: _Optional[_Iterable[_Union[ConsistencyProof, _Mapping]]] = ...) -> None: ...
