from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.rpc import status_pb2 as _status_pb2
from lwdock.common.v1 import semantic_pb2 as _semantic_pb2
from lwdock.common.v1 import specification_pb2 as _specification_pb2
from lwdock.common.v1 import tensor_pb2 as _tensor_pb2
from lwdock.reuse.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("learnwares", "reuser", "strategy", "input", "user_specification", "return_member_outputs")
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    REUSER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    USER_SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    RETURN_MEMBER_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    learnwares: _resources_pb2.LearnwareSelection
    reuser: str
    strategy: _resources_pb2.ReuseStrategy
    input: _tensor_pb2.Tensor
    user_specification: _specification_pb2.StatisticalSpecification
    return_member_outputs: bool
    def __init__(self, learnwares: _Optional[_Union[_resources_pb2.LearnwareSelection, _Mapping]] = ..., reuser: _Optional[str] = ..., strategy: _Optional[_Union[_resources_pb2.ReuseStrategy, str]] = ..., input: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., user_specification: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., return_member_outputs: _Optional[bool] = ...) -> None: ...

class MemberResult(_message.Message):
    __slots__ = ("learnware", "status", "output")
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    learnware: str
    status: _status_pb2.Status
    output: _tensor_pb2.Tensor
    def __init__(self, learnware: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("output", "strategy", "members")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    output: _tensor_pb2.Tensor
    strategy: _resources_pb2.ReuseStrategy
    members: _containers.RepeatedCompositeFieldContainer[MemberResult]
    def __init__(self, output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., strategy: _Optional[_Union[_resources_pb2.ReuseStrategy, str]] = ..., members: _Optional[_Iterable[_Union[MemberResult, _Mapping]]] = ...) -> None: ...

class StreamPredictConfig(_message.Message):
    __slots__ = ("learnwares", "reuser", "strategy", "user_specification", "return_member_outputs")
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    REUSER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    USER_SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    RETURN_MEMBER_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    learnwares: _resources_pb2.LearnwareSelection
    reuser: str
    strategy: _resources_pb2.ReuseStrategy
    user_specification: _specification_pb2.StatisticalSpecification
    return_member_outputs: bool
    def __init__(self, learnwares: _Optional[_Union[_resources_pb2.LearnwareSelection, _Mapping]] = ..., reuser: _Optional[str] = ..., strategy: _Optional[_Union[_resources_pb2.ReuseStrategy, str]] = ..., user_specification: _Optional[_Union[_specification_pb2.StatisticalSpecification, _Mapping]] = ..., return_member_outputs: _Optional[bool] = ...) -> None: ...

class StreamPredictRequest(_message.Message):
    __slots__ = ("config", "header", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: StreamPredictConfig
    header: _tensor_pb2.TensorHeader
    chunk: bytes
    def __init__(self, config: _Optional[_Union[StreamPredictConfig, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class StreamPredictResponse(_message.Message):
    __slots__ = ("header", "chunk", "summary")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    header: _tensor_pb2.TensorHeader
    chunk: bytes
    summary: StreamPredictSummary
    def __init__(self, header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., summary: _Optional[_Union[StreamPredictSummary, _Mapping]] = ...) -> None: ...

class StreamPredictSummary(_message.Message):
    __slots__ = ("strategy", "members")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    strategy: _resources_pb2.ReuseStrategy
    members: _containers.RepeatedCompositeFieldContainer[MemberResult]
    def __init__(self, strategy: _Optional[_Union[_resources_pb2.ReuseStrategy, str]] = ..., members: _Optional[_Iterable[_Union[MemberResult, _Mapping]]] = ...) -> None: ...

class CreateReuserConfig(_message.Message):
    __slots__ = ("learnwares", "strategy", "mode", "request_id")
    LEARNWARES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    learnwares: _resources_pb2.LearnwareSelection
    strategy: _resources_pb2.ReuseStrategy
    mode: str
    request_id: str
    def __init__(self, learnwares: _Optional[_Union[_resources_pb2.LearnwareSelection, _Mapping]] = ..., strategy: _Optional[_Union[_resources_pb2.ReuseStrategy, str]] = ..., mode: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateReuserRequest(_message.Message):
    __slots__ = ("config", "x_header", "x_chunk", "y_header", "y_chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    X_HEADER_FIELD_NUMBER: _ClassVar[int]
    X_CHUNK_FIELD_NUMBER: _ClassVar[int]
    Y_HEADER_FIELD_NUMBER: _ClassVar[int]
    Y_CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: CreateReuserConfig
    x_header: _tensor_pb2.TensorHeader
    x_chunk: bytes
    y_header: _tensor_pb2.TensorHeader
    y_chunk: bytes
    def __init__(self, config: _Optional[_Union[CreateReuserConfig, _Mapping]] = ..., x_header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., x_chunk: _Optional[bytes] = ..., y_header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., y_chunk: _Optional[bytes] = ...) -> None: ...

class GetReuserRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteReuserRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CheckLearnwareRequest(_message.Message):
    __slots__ = ("learnware", "package_sha256", "package", "semantic_specification")
    LEARNWARE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_SPECIFICATION_FIELD_NUMBER: _ClassVar[int]
    learnware: str
    package_sha256: str
    package: bytes
    semantic_specification: _semantic_pb2.SemanticSpecification
    def __init__(self, learnware: _Optional[str] = ..., package_sha256: _Optional[str] = ..., package: _Optional[bytes] = ..., semantic_specification: _Optional[_Union[_semantic_pb2.SemanticSpecification, _Mapping]] = ...) -> None: ...

class CheckLearnwareResponse(_message.Message):
    __slots__ = ("passed", "reason", "log")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    reason: str
    log: str
    def __init__(self, passed: _Optional[bool] = ..., reason: _Optional[str] = ..., log: _Optional[str] = ...) -> None: ...

class GetRuntimeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRuntimeInfoResponse(_message.Message):
    __slots__ = ("sandbox_available", "sandbox_kind", "sandbox_unavailable_reason", "unsandboxed_runs_allowed", "runtimes", "strategies")
    SANDBOX_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_KIND_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    UNSANDBOXED_RUNS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    sandbox_available: bool
    sandbox_kind: str
    sandbox_unavailable_reason: str
    unsandboxed_runs_allowed: bool
    runtimes: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Runtime]
    strategies: _containers.RepeatedScalarFieldContainer[_resources_pb2.ReuseStrategy]
    def __init__(self, sandbox_available: _Optional[bool] = ..., sandbox_kind: _Optional[str] = ..., sandbox_unavailable_reason: _Optional[str] = ..., unsandboxed_runs_allowed: _Optional[bool] = ..., runtimes: _Optional[_Iterable[_Union[_resources_pb2.Runtime, _Mapping]]] = ..., strategies: _Optional[_Iterable[_Union[_resources_pb2.ReuseStrategy, str]]] = ...) -> None: ...
