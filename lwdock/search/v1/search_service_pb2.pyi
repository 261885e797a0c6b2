from lwdock.common.v1 import specification_pb2 as _specification_pb2
from lwdock.search.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchLearnwaresRequest(_message.Message):
    __slots__ = ("semantic_query", "statistical_specification", "page_size", "page_token", "max_mixture", "include_learnwares")
    SEMANTIC_QUERY_FIELD_NUMBER: _ClassVar[int]
    STATISTICAL_SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_MIXTURE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    semantic_query: _resources_pb2.SemanticQuery
    statistical_specification: _specification_pb2.StatisticalSpecification
    page_size: int
    page_token: str
    max_mixture: int
    include_learnwares: bool
    def __init__(self, semantic_query: _Optional[_Union[_resources_pb2.SemanticQuery, _Mapping]] = ..., statistical_specification: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., max_mixture: _Optional[int] = ..., include_learnwares: _Optional[bool] = ...) -> None: ...

class SearchLearnwaresResponse(_message.Message):
    __slots__ = ("single_results", "mixture", "next_page_token", "candidate_count", "empty_reason", "index_sequence")
    SINGLE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EMPTY_REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    single_results: _containers.RepeatedCompositeFieldContainer[_resources_pb2.SingleResult]
    mixture: _resources_pb2.MixtureResult
    next_page_token: str
    candidate_count: int
    empty_reason: str
    index_sequence: int
    def __init__(self, single_results: _Optional[_Iterable[_Union[_resources_pb2.SingleResult, _Mapping]]] = ..., mixture: _Optional[_Union[_resources_pb2.MixtureResult, _Mapping]] = ..., next_page_token: _Optional[str] = ..., candidate_count: _Optional[int] = ..., empty_reason: _Optional[str] = ..., index_sequence: _Optional[int] = ...) -> None: ...

class GetIndexStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIndexStatsResponse(_message.Message):
    __slots__ = ("learnware_count", "partitions", "last_sequence", "synced", "embedding_dimension", "embedding_seed", "sync_lag_seconds", "sync_error", "rescore_dimension", "worker", "workers")
    LEARNWARE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SEED_FIELD_NUMBER: _ClassVar[int]
    SYNC_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYNC_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESCORE_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    learnware_count: int
    partitions: _containers.RepeatedCompositeFieldContainer[_resources_pb2.PartitionStats]
    last_sequence: int
    synced: bool
    embedding_dimension: int
    embedding_seed: int
    sync_lag_seconds: float
    sync_error: str
    rescore_dimension: int
    worker: int
    workers: int
    def __init__(self, learnware_count: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[_resources_pb2.PartitionStats, _Mapping]]] = ..., last_sequence: _Optional[int] = ..., synced: _Optional[bool] = ..., embedding_dimension: _Optional[int] = ..., embedding_seed: _Optional[int] = ..., sync_lag_seconds: _Optional[float] = ..., sync_error: _Optional[str] = ..., rescore_dimension: _Optional[int] = ..., worker: _Optional[int] = ..., workers: _Optional[int] = ...) -> None: ...
