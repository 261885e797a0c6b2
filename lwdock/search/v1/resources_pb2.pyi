from lwdock.common.v1 import learnware_pb2 as _learnware_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SemanticQuery(_message.Message):
    __slots__ = ("data_types", "tasks", "libraries", "scenarios", "licenses", "text", "learnware_id")
    DATA_TYPES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    SCENARIOS_FIELD_NUMBER: _ClassVar[int]
    LICENSES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    data_types: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    libraries: _containers.RepeatedScalarFieldContainer[str]
    scenarios: _containers.RepeatedScalarFieldContainer[str]
    licenses: _containers.RepeatedScalarFieldContainer[str]
    text: str
    learnware_id: str
    def __init__(self, data_types: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., libraries: _Optional[_Iterable[str]] = ..., scenarios: _Optional[_Iterable[str]] = ..., licenses: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ..., learnware_id: _Optional[str] = ...) -> None: ...

class SingleResult(_message.Message):
    __slots__ = ("learnware_id", "mmd2", "score", "similarity", "learnware")
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    MMD2_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    learnware_id: str
    mmd2: float
    score: float
    similarity: float
    learnware: _learnware_pb2.Learnware
    def __init__(self, learnware_id: _Optional[str] = ..., mmd2: _Optional[float] = ..., score: _Optional[float] = ..., similarity: _Optional[float] = ..., learnware: _Optional[_Union[_learnware_pb2.Learnware, _Mapping]] = ...) -> None: ...

class MixtureResult(_message.Message):
    __slots__ = ("learnware_ids", "weights", "mmd2", "score", "similarity")
    LEARNWARE_IDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MMD2_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    learnware_ids: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    mmd2: float
    score: float
    similarity: float
    def __init__(self, learnware_ids: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ..., mmd2: _Optional[float] = ..., score: _Optional[float] = ..., similarity: _Optional[float] = ...) -> None: ...

class PartitionStats(_message.Message):
    __slots__ = ("key", "learnware_count", "index_type", "memory_bytes", "memory_bytes_per_learnware")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_PER_LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    key: str
    learnware_count: int
    index_type: str
    memory_bytes: int
    memory_bytes_per_learnware: int
    def __init__(self, key: _Optional[str] = ..., learnware_count: _Optional[int] = ..., index_type: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., memory_bytes_per_learnware: _Optional[int] = ...) -> None: ...
