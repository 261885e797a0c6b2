from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureDescription(_message.Message):
    __slots__ = ("dimension", "descriptions")
    class DescriptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    dimension: int
    descriptions: _containers.ScalarMap[int, str]
    def __init__(self, dimension: _Optional[int] = ..., descriptions: _Optional[_Mapping[int, str]] = ...) -> None: ...

class SemanticSpecification(_message.Message):
    __slots__ = ("data_type", "task", "library", "scenarios", "license", "name", "description", "input", "output", "model")
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    SCENARIOS_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    data_type: str
    task: str
    library: str
    scenarios: _containers.RepeatedScalarFieldContainer[str]
    license: str
    name: str
    description: str
    input: FeatureDescription
    output: FeatureDescription
    model: str
    def __init__(self, data_type: _Optional[str] = ..., task: _Optional[str] = ..., library: _Optional[str] = ..., scenarios: _Optional[_Iterable[str]] = ..., license: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., input: _Optional[_Union[FeatureDescription, _Mapping]] = ..., output: _Optional[_Union[FeatureDescription, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...
