"""Thin ReuseService and KServe v2 servicers."""

from __future__ import annotations

import grpc

from lwdock.inference import grpc_predict_v2_pb2 as v2
from lwdock.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from lwdock.reuse.v1 import reuse_service_pb2, reuse_service_pb2_grpc
from reuse_service.runtime import RuntimeState


class ReuseServicer(reuse_service_pb2_grpc.ReuseServiceServicer):
    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    async def GetRuntimeInfo(
        self, request: reuse_service_pb2.GetRuntimeInfoRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.GetRuntimeInfoResponse:
        sandbox = self.state.sandbox
        return reuse_service_pb2.GetRuntimeInfoResponse(
            sandbox_available=sandbox.available,
            sandbox_kind=sandbox.kind,
            sandbox_unavailable_reason=sandbox.reason,
            unsandboxed_runs_allowed=self.state.allow_unsandboxed,
        )


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Open Inference Protocol; readiness shared with grpc.health.v1."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

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
