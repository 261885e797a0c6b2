import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TableFitConfig(_message.Message):
    __slots__ = ("gamma", "reduced_set_size", "steps", "seed", "allow_negative_beta")
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    REDUCED_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEGATIVE_BETA_FIELD_NUMBER: _ClassVar[int]
    gamma: float
    reduced_set_size: int
    steps: int
    seed: int
    allow_negative_beta: bool
    def __init__(self, gamma: _Optional[float] = ..., reduced_set_size: _Optional[int] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., allow_negative_beta: _Optional[bool] = ...) -> None: ...

class ImageFitConfig(_message.Message):
    __slots__ = ("reduced_set_size", "steps", "seed", "layout")
    REDUCED_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    reduced_set_size: int
    steps: int
    seed: int
    layout: str
    def __init__(self, reduced_set_size: _Optional[int] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., layout: _Optional[str] = ...) -> None: ...

class TextFitConfig(_message.Message):
    __slots__ = ("table", "embedding_model")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    table: TableFitConfig
    embedding_model: str
    def __init__(self, table: _Optional[_Union[TableFitConfig, _Mapping]] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class FitSpecificationMetadata(_message.Message):
    __slots__ = ("stage", "progress_percent", "rows_received", "create_time", "update_time", "device")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ROWS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    progress_percent: float
    rows_received: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    device: str
    def __init__(self, stage: _Optional[str] = ..., progress_percent: _Optional[float] = ..., rows_received: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...
