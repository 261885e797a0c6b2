"""Thin ReuseService and KServe v2 servicers: convert, call the engine, convert back."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from importlib import metadata

import grpc
import numpy as np
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from lwdock.converters import statistical_spec_from_proto
from lwdock.errors import InvalidArgument, NotFound
from lwdock.inference import grpc_predict_v2_pb2 as v2
from lwdock.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from lwdock.registry_client import learnware_name
from lwdock.reuse.v1 import resources_pb2, reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.rkme.spec import RKMESpec
from lwdock.semantic.checker import Semantic
from lwdock.server.operations import OperationStore
from lwdock.server.status import to_status_proto
from lwdock.streams import TensorAssembler, tensor_chunks, tensor_header
from lwdock.tensors import from_numpy, to_numpy
from reuse_service import kserve
from reuse_service.checks import check_learnware
from reuse_service.engine import (
    ACTIVE,
    MemberOutcome,
    PredictResult,
    ReuseEngine,
    Strategy,
    table_input_check,
)
from reuse_service.fitted import FITTED, MODES, FittedReuser, ReuserStore, fit_reuser
from reuse_service.runtime import RuntimeState

DOMAIN = "lwdock.reuse"
MAX_STREAM_BYTES = 2 * 1024**3
MAX_FIT_BYTES = 1024**3
MAX_REQUEST_IDS = 10_000  # CreateReuser request_ids remembered for safe retries
RUNTIME_PACKAGES = ("numpy", "scikit-learn", "scipy", "torch", "lightgbm", "pandas")


def call_timeout(engine: ReuseEngine, context: grpc.aio.ServicerContext) -> float:
    """The sandbox deadline: the configured one, within the caller's (a little before it)."""
    limit = engine.limits.call_timeout_s
    remaining = context.time_remaining()
    if remaining is not None:
        limit = min(limit, max(0.1, remaining - 0.25))
    return limit


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def reuser_to_proto(fitted: FittedReuser) -> resources_pb2.Reuser:
    r = fitted.record
    return resources_pb2.Reuser(
        name=r.name,
        strategy=r.strategy,  # type: ignore[arg-type]
        learnwares=r.learnwares,
        mode=r.mode,
        create_time=_timestamp(r.create_time),
        expire_time=_timestamp(r.expire_time),
    )


def member_results(
    outcomes: list[MemberOutcome], with_outputs: bool
) -> list[reuse_service_pb2.MemberResult]:
    results = []
    for outcome in outcomes:
        status = (
            to_status_proto(outcome.error, DOMAIN)
            if outcome.error is not None
            else status_pb2.Status(code=code_pb2.OK)
        )
        result = reuse_service_pb2.MemberResult(learnware=outcome.name, status=status)
        if with_outputs and outcome.output is not None:
            result.output.CopyFrom(from_numpy(outcome.output))
        results.append(result)
    return results


def _user_spec(message: object, has: bool, field: str) -> RKMESpec | None:
    return statistical_spec_from_proto(message, field) if has else None  # type: ignore[arg-type]


class ReuseServicer(reuse_service_pb2_grpc.ReuseServiceServicer):
    def __init__(
        self,
        state: RuntimeState,
        engine: ReuseEngine,
        reusers: ReuserStore,
        operations: OperationStore,
    ) -> None:
        self.state = state
        self.engine = engine
        self.reusers = reusers
        self.operations = operations
        self._requests: dict[str, str] = {}

    async def _predict(
        self,
        target: str,
        selection: resources_pb2.LearnwareSelection,
        reuser: str,
        strategy: int,
        x: np.ndarray,
        user_spec: RKMESpec | None,
        timeout_s: float,
    ) -> PredictResult:
        if target == "reuser":
            fitted = self.reusers.get(reuser, "reuser")
            members = await self.engine.members(fitted.record.learnwares, timeout_s)
            outcomes = await self.engine.run_all(members, x, timeout_s)
            for outcome in outcomes:
                if outcome.error is not None:
                    raise outcome.error
            outputs = [o.output for o in outcomes]
            output = await asyncio.to_thread(fitted.predict, x, outputs)  # type: ignore[arg-type]
            return PredictResult(output, fitted.record.strategy, outcomes)
        if target != "learnwares":
            raise InvalidArgument.for_field("target", "set `learnwares` or `reuser`")
        return await self.engine.predict(
            list(selection.learnwares), list(selection.weights), strategy, x, user_spec, timeout_s
        )

    async def Predict(
        self, request: reuse_service_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.PredictResponse:
        x = to_numpy(request.input, "input")
        result = await self._predict(
            request.WhichOneof("target") or "",
            request.learnwares,
            request.reuser,
            request.strategy,
            x,
            _user_spec(
                request.user_specification,
                request.HasField("user_specification"),
                "user_specification",
            ),
            call_timeout(self.engine, context),
        )
        return reuse_service_pb2.PredictResponse(
            output=from_numpy(result.output),
            strategy=result.strategy,  # type: ignore[arg-type]
            members=member_results(result.members, request.return_member_outputs),
        )

    async def StreamPredict(
        self,
        request_iterator: AsyncIterator[reuse_service_pb2.StreamPredictRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[reuse_service_pb2.StreamPredictResponse]:
        config: reuse_service_pb2.StreamPredictConfig | None = None
        assembler: TensorAssembler | None = None
        async for message in request_iterator:
            kind = message.WhichOneof("message")
            if kind == "config":
                if config is not None or assembler is not None:
                    raise InvalidArgument.for_field("config", "must be the first message, once")
                config = message.config
            elif kind == "header":
                if config is None or assembler is not None:
                    raise InvalidArgument.for_field("header", "comes once, after the config")
                assembler = TensorAssembler(message.header, "header", max_bytes=MAX_STREAM_BYTES)
            elif kind == "chunk":
                if assembler is None:
                    raise InvalidArgument.for_field("chunk", "data before the header")
                assembler.add(message.chunk)
            else:
                raise InvalidArgument.for_field("message", "empty message in the stream")
        if config is None or assembler is None:
            raise InvalidArgument.for_field("config", "the stream needs a config and a header")
        x = assembler.finish()
        result = await self._predict(
            config.WhichOneof("target") or "",
            config.learnwares,
            config.reuser,
            config.strategy,
            x,
            _user_spec(
                config.user_specification,
                config.HasField("user_specification"),
                "config.user_specification",
            ),
            call_timeout(self.engine, context),
        )
        output = np.asarray(result.output)
        yield reuse_service_pb2.StreamPredictResponse(
            header=tensor_header(output, with_sha256=True)
        )
        for chunk in tensor_chunks(output):
            yield reuse_service_pb2.StreamPredictResponse(chunk=chunk)
        yield reuse_service_pb2.StreamPredictResponse(
            summary=reuse_service_pb2.StreamPredictSummary(
                strategy=result.strategy,  # type: ignore[arg-type]
                members=member_results(result.members, config.return_member_outputs),
            )
        )

    async def CreateReuser(
        self,
        request_iterator: AsyncIterator[reuse_service_pb2.CreateReuserRequest],
        context: grpc.aio.ServicerContext,
    ) -> operations_pb2.Operation:
        config: reuse_service_pb2.CreateReuserConfig | None = None
        parts: dict[str, TensorAssembler] = {}
        async for message in request_iterator:
            kind = message.WhichOneof("message") or ""
            if kind == "config":
                if config is not None or parts:
                    raise InvalidArgument.for_field("config", "must be the first message, once")
                config = message.config
            elif kind in ("x_header", "y_header"):
                which = kind[0]
                if config is None or which in parts or (which == "y" and "x" not in parts):
                    raise InvalidArgument.for_field(kind, "config, then x, then y; once each")
                parts[which] = TensorAssembler(
                    getattr(message, kind), kind, max_bytes=MAX_FIT_BYTES
                )
            elif kind in ("x_chunk", "y_chunk"):
                which = kind[0]
                if which not in parts or (which == "x" and "y" in parts):
                    raise InvalidArgument.for_field(kind, f"data before its {which}_header")
                parts[which].add(getattr(message, kind))
            else:
                raise InvalidArgument.for_field("message", "empty message in the stream")
        if config is None:
            raise InvalidArgument.for_field("config", "the stream has no config")
        if config.strategy not in FITTED:
            raise InvalidArgument.for_field(
                "config.strategy",
                "must be REUSE_STRATEGY_ENSEMBLE_PRUNING or REUSE_STRATEGY_FEATURE_AUGMENT",
            )
        if config.mode not in MODES:
            raise InvalidArgument.for_field("config.mode", f"must be one of {list(MODES)}")
        if "x" not in parts or "y" not in parts:
            raise InvalidArgument.for_field("y_header", "labelled data needs x and y")
        x, y = parts["x"].finish(), parts["y"].finish()
        if len(x) != len(y):
            raise InvalidArgument.for_field("y_header.shape", f"{len(y)} labels for {len(x)} rows")
        if config.request_id and config.request_id in self._requests:
            try:
                return self.operations.get(self._requests[config.request_id])
            except NotFound:
                pass
        self.engine.require_sandbox()
        names = list(config.learnwares.learnwares)
        strategy, mode = int(config.strategy), config.mode
        timeout_s = self.engine.limits.call_timeout_s

        async def work(set_metadata: Callable[[Message], None]) -> resources_pb2.Reuser:
            def stage(name: str, percent: float) -> None:
                metadata = resources_pb2.CreateReuserMetadata(stage=name, progress_percent=percent)
                set_metadata(metadata)

            stage("running learnwares", 10)
            members = await self.engine.members(names, timeout_s)
            for member in members:
                table_input_check(member, x, "x_header")
            outcomes = await self.engine.run_all(members, x, timeout_s)
            outputs = []
            for outcome in outcomes:
                if outcome.output is None:
                    assert outcome.error is not None
                    raise outcome.error
                outputs.append(outcome.output)
            stage("fitting", 60)
            model = await asyncio.to_thread(fit_reuser, strategy, mode, x, y, outputs)
            fitted = await asyncio.to_thread(
                self.reusers.add, strategy, [m.name for m in members], mode, model
            )
            stage("done", 100)
            return reuser_to_proto(fitted)

        operation = self.operations.start(
            work, resources_pb2.CreateReuserMetadata(stage="queued", progress_percent=0)
        )
        if config.request_id:
            self._requests[config.request_id] = operation.name
            while len(self._requests) > MAX_REQUEST_IDS:
                self._requests.pop(next(iter(self._requests)))
        return operation

    async def GetReuser(
        self, request: reuse_service_pb2.GetReuserRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Reuser:
        return reuser_to_proto(await asyncio.to_thread(self.reusers.get, request.name))

    async def DeleteReuser(
        self, request: reuse_service_pb2.DeleteReuserRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await asyncio.to_thread(self.reusers.delete, request.name)
        return empty_pb2.Empty()

    async def CheckLearnware(
        self, request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        if not request.HasField("semantic_specification"):
            raise InvalidArgument.for_field("semantic_specification", "required")
        self.engine.require_sandbox()
        semantic = Semantic.from_proto(request.semantic_specification)
        timeout_s = call_timeout(self.engine, context)
        data = request.package
        if not data:
            if not request.learnware:
                raise InvalidArgument.for_field("package", "send the package or name the learnware")
            learnware = await self.engine.registry.get(learnware_name(request.learnware), timeout_s)
            data = await self.engine.registry.download(learnware, timeout_s)
        result = await check_learnware(
            self.engine, data, request.package_sha256, semantic, request.learnware, timeout_s
        )
        return reuse_service_pb2.CheckLearnwareResponse(
            passed=result.passed, reason=result.reason, log=result.log
        )

    async def GetRuntimeInfo(
        self, request: reuse_service_pb2.GetRuntimeInfoRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.GetRuntimeInfoResponse:
        sandbox = self.state.sandbox
        packages = []
        for name in RUNTIME_PACKAGES:
            try:
                packages.append(f"{name}=={metadata.version(name)}")
            except metadata.PackageNotFoundError:
                pass
        return reuse_service_pb2.GetRuntimeInfoResponse(
            sandbox_available=sandbox.available,
            sandbox_kind=sandbox.kind,
            sandbox_unavailable_reason=sandbox.reason,
            unsandboxed_runs_allowed=self.state.allow_unsandboxed,
            runtimes=[
                resources_pb2.Runtime(
                    name="default",
                    python_version=".".join(str(v) for v in sys.version_info[:3]),
                    packages=packages,
                )
            ],
            strategies=sorted(Strategy.NAMES),  # type: ignore[arg-type]
        )


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Open Inference Protocol; model name = learnware id (ACTIVE only)."""

    def __init__(self, state: RuntimeState, engine: ReuseEngine) -> None:
        self.state = state
        self.engine = engine

    async def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.state.ready)

    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name="lwdock-reuse", version=self.state.version, extensions=[]
        )

    async def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelReadyResponse:
        if not request.name:
            raise InvalidArgument.for_field("name", "required (a learnware id)")
        learnware = await self.engine.registry.get(request.name, call_timeout(self.engine, context))
        return v2.ModelReadyResponse(ready=learnware.state == ACTIVE and self.state.ready)

    async def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelMetadataResponse:
        if not request.name:
            raise InvalidArgument.for_field("name", "required (a learnware id)")
        lw = await self.engine.registry.get(request.name, call_timeout(self.engine, context))
        semantic = lw.semantic_specification
        in_dim = semantic.input.dimension if semantic.HasField("input") else 0
        out_dim = semantic.output.dimension if semantic.HasField("output") else 0
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=request.name,
            versions=["1"],
            platform="lwdock-sandbox",
            inputs=[tensor(name="input", datatype="FP32", shape=[-1, in_dim] if in_dim else [-1])],
            outputs=[
                tensor(name="output", datatype="FP32", shape=[-1, out_dim] if out_dim else [-1])
            ],
        )

    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        if not request.model_name:
            raise InvalidArgument.for_field("model_name", "required (a learnware id)")
        x = kserve.input_array(request)
        result = await self.engine.predict(
            [request.model_name], [], Strategy.SINGLE, x, None, call_timeout(self.engine, context)
        )
        return kserve.infer_response(request, np.asarray(result.output))
