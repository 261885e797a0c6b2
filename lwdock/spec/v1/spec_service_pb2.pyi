from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.longrunning import operations_pb2 as _operations_pb2
from lwdock.common.v1 import specification_pb2 as _specification_pb2
from lwdock.common.v1 import tensor_pb2 as _tensor_pb2
from lwdock.spec.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FitTableSpecificationRequest(_message.Message):
    __slots__ = ("config", "header", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: _resources_pb2.TableFitConfig
    header: _tensor_pb2.TensorHeader
    chunk: bytes
    def __init__(self, config: _Optional[_Union[_resources_pb2.TableFitConfig, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class FitImageSpecificationRequest(_message.Message):
    __slots__ = ("config", "header", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: _resources_pb2.ImageFitConfig
    header: _tensor_pb2.TensorHeader
    chunk: bytes
    def __init__(self, config: _Optional[_Union[_resources_pb2.ImageFitConfig, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class FitTextSpecificationRequest(_message.Message):
    __slots__ = ("config", "texts")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    config: _resources_pb2.TextFitConfig
    texts: TextBatch
    def __init__(self, config: _Optional[_Union[_resources_pb2.TextFitConfig, _Mapping]] = ..., texts: _Optional[_Union[TextBatch, _Mapping]] = ...) -> None: ...

class TextBatch(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class ComputeSpecificationDistanceRequest(_message.Message):
    __slots__ = ("left", "right")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    left: _specification_pb2.StatisticalSpecification
    right: _specification_pb2.StatisticalSpecification
    def __init__(self, left: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., right: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ...) -> None: ...

class ComputeSpecificationDistanceResponse(_message.Message):
    __slots__ = ("inner_product", "mmd2", "left_self_inner_product", "right_self_inner_product")
    INNER_PRODUCT_FIELD_NUMBER: _ClassVar[int]
    MMD2_FIELD_NUMBER: _ClassVar[int]
    LEFT_SELF_INNER_PRODUCT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_SELF_INNER_PRODUCT_FIELD_NUMBER: _ClassVar[int]
    inner_product: float
    mmd2: float
    left_self_inner_product: float
    right_self_inner_product: float
    def __init__(self, inner_product: _Optional[float] = ..., mmd2: _Optional[float] = ..., left_self_inner_product: _Optional[float] = ..., right_self_inner_product: _Optional[float] = ...) -> None: ...

class SampleSpecificationRequest(_message.Message):
    __slots__ = ("specification", "sample_count", "seed")
    SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    specification: _specification_pb2.StatisticalSpecification
    sample_count: int
    seed: int
    def __init__(self, specification: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., sample_count: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleSpecificationResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _tensor_pb2.Tensor
    def __init__(self, samples: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class EmbedSpecificationRequest(_message.Message):
    __slots__ = ("specification", "dimension", "seed")
    SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    specification: _specification_pb2.StatisticalSpecification
    dimension: int
    seed: int
    def __init__(self, specification: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., dimension: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EmbedSpecificationResponse(_message.Message):
    __slots__ = ("embedding", "dimension", "seed")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    dimension: int
    seed: int
    def __init__(self, embedding: _Optional[_Iterable[float]] = ..., dimension: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...
