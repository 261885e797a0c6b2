import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReuseStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REUSE_STRATEGY_UNSPECIFIED: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_SINGLE: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_AVERAGE_MEAN: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_VOTE_BY_LABEL: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_VOTE_BY_PROBABILITY: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_JOB_SELECTOR: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_ENSEMBLE_PRUNING: _ClassVar[ReuseStrategy]
    REUSE_STRATEGY_FEATURE_AUGMENT: _ClassVar[ReuseStrategy]
REUSE_STRATEGY_UNSPECIFIED: ReuseStrategy
REUSE_STRATEGY_SINGLE: ReuseStrategy
REUSE_STRATEGY_AVERAGE_MEAN: ReuseStrategy
REUSE_STRATEGY_VOTE_BY_LABEL: ReuseStrategy
REUSE_STRATEGY_VOTE_BY_PROBABILITY: ReuseStrategy
REUSE_STRATEGY_JOB_SELECTOR: ReuseStrategy
REUSE_STRATEGY_ENSEMBLE_PRUNING: ReuseStrategy
REUSE_STRATEGY_FEATURE_AUGMENT: ReuseStrategy

class LearnwareSelection(_message.Message):
    __slots__ = ("learnwares", "weights")
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    learnwares: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, learnwares: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class Reuser(_message.Message):
    __slots__ = ("name", "strategy", "learnwares", "mode", "create_time", "expire_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    strategy: ReuseStrategy
    learnwares: _containers.RepeatedScalarFieldContainer[str]
    mode: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., strategy: _Optional[_Union[ReuseStrategy, str]] = ..., learnwares: _Optional[_Iterable[str]] = ..., mode: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateReuserMetadata(_message.Message):
    __slots__ = ("stage", "progress_percent")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    progress_percent: float
    def __init__(self, stage: _Optional[str] = ..., progress_percent: _Optional[float] = ...) -> None: ...

class Runtime(_message.Message):
    __slots__ = ("name", "python_version", "packages")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    python_version: str
    packages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., python_version: _Optional[str] = ..., packages: _Optional[_Iterable[str]] = ...) -> None: ...
