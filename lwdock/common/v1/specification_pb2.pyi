from lwdock.common.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpecificationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPECIFICATION_TYPE_UNSPECIFIED: _ClassVar[SpecificationType]
    SPECIFICATION_TYPE_RKME_TABLE: _ClassVar[SpecificationType]
    SPECIFICATION_TYPE_RKME_IMAGE: _ClassVar[SpecificationType]
    SPECIFICATION_TYPE_RKME_TEXT: _ClassVar[SpecificationType]
SPECIFICATION_TYPE_UNSPECIFIED: SpecificationType
SPECIFICATION_TYPE_RKME_TABLE: SpecificationType
SPECIFICATION_TYPE_RKME_IMAGE: SpecificationType
SPECIFICATION_TYPE_RKME_TEXT: SpecificationType

class ImageKernel(_message.Message):
    __slots__ = ("version", "n_models", "net_width", "net_depth", "seed", "pixel_mean", "pixel_std")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_MODELS_FIELD_NUMBER: _ClassVar[int]
    NET_WIDTH_FIELD_NUMBER: _ClassVar[int]
    NET_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PIXEL_MEAN_FIELD_NUMBER: _ClassVar[int]
    PIXEL_STD_FIELD_NUMBER: _ClassVar[int]
    version: int
    n_models: int
    net_width: int
    net_depth: int
    seed: int
    pixel_mean: float
    pixel_std: float
    def __init__(self, version: _Optional[int] = ..., n_models: _Optional[int] = ..., net_width: _Optional[int] = ..., net_depth: _Optional[int] = ..., seed: _Optional[int] = ..., pixel_mean: _Optional[float] = ..., pixel_std: _Optional[float] = ...) -> None: ...

class RkmeSpecification(_message.Message):
    __slots__ = ("type", "z", "beta", "gamma", "num_points", "language", "embedding_model", "image_kernel", "fit_mmd2")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    NUM_POINTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KERNEL_FIELD_NUMBER: _ClassVar[int]
    FIT_MMD2_FIELD_NUMBER: _ClassVar[int]
    type: SpecificationType
    z: _tensor_pb2.Tensor
    beta: _containers.RepeatedScalarFieldContainer[float]
    gamma: float
    num_points: int
    language: _containers.RepeatedScalarFieldContainer[str]
    embedding_model: str
    image_kernel: ImageKernel
    fit_mmd2: float
    def __init__(self, type: _Optional[_Union[SpecificationType, str]] = ..., z: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., beta: _Optional[_Iterable[float]] = ..., gamma: _Optional[float] = ..., num_points: _Optional[int] = ..., language: _Optional[_Iterable[str]] = ..., embedding_model: _Optional[str] = ..., image_kernel: _Optional[_Union[ImageKernel, _Mapping]] = ..., fit_mmd2: _Optional[float] = ...) -> None: ...

class StatisticalSpecification(_message.Message):
    __slots__ = ("rkme", "reference_json")
    RKME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    rkme: RkmeSpecification
    reference_json: str
    def __init__(self, rkme: _Optional[_Union[RkmeSpecification, _Mapping]] = ..., reference_json: _Optional[str] = ...) -> None: ...
