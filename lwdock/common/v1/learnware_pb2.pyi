import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lwdock.common.v1 import semantic_pb2 as _semantic_pb2
from lwdock.common.v1 import specification_pb2 as _specification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LearnwareState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEARNWARE_STATE_UNSPECIFIED: _ClassVar[LearnwareState]
    LEARNWARE_STATE_PENDING: _ClassVar[LearnwareState]
    LEARNWARE_STATE_CHECKING: _ClassVar[LearnwareState]
    LEARNWARE_STATE_ACTIVE: _ClassVar[LearnwareState]
    LEARNWARE_STATE_REJECTED: _ClassVar[LearnwareState]
    LEARNWARE_STATE_DELETED: _ClassVar[LearnwareState]
LEARNWARE_STATE_UNSPECIFIED: LearnwareState
LEARNWARE_STATE_PENDING: LearnwareState
LEARNWARE_STATE_CHECKING: LearnwareState
LEARNWARE_STATE_ACTIVE: LearnwareState
LEARNWARE_STATE_REJECTED: LearnwareState
LEARNWARE_STATE_DELETED: LearnwareState

class PackageInfo(_message.Message):
    __slots__ = ("sha256", "size_bytes", "content_type")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    content_type: str
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class Specification(_message.Message):
    __slots__ = ("name", "file_name", "rkme")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    RKME_FIELD_NUMBER: _ClassVar[int]
    name: str
    file_name: str
    rkme: _specification_pb2.RkmeSpecification
    def __init__(self, name: _Optional[str] = ..., file_name: _Optional[str] = ..., rkme: _Optional[_Union[_specification_pb2.RkmeSpecification, _Mapping]] = ...) -> None: ...

class Learnware(_message.Message):
    __slots__ = ("name", "learnware_id", "semantic_specification", "state", "state_reason", "owner", "package", "specifications", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEARNWARE_ID_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SPECIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    learnware_id: str
    semantic_specification: _semantic_pb2.SemanticSpecification
    state: LearnwareState
    state_reason: str
    owner: str
    package: PackageInfo
    specifications: _containers.RepeatedCompositeFieldContainer[Specification]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., learnware_id: _Optional[str] = ..., semantic_specification: _Optional[_Union[_semantic_pb2.SemanticSpecification, _Mapping]] = ..., state: _Optional[_Union[LearnwareState, str]] = ..., state_reason: _Optional[str] = ..., owner: _Optional[str] = ..., package: _Optional[_Union[PackageInfo, _Mapping]] = ..., specifications: _Optional[_Iterable[_Union[Specification, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...
