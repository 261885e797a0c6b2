"""Wiring of reuse_service: lwdock.reuse.v1 and KServe v2 on one server."""

from __future__ import annotations

import argparse
import logging

import grpc

from lwdock.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from lwdock.reuse.v1 import reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, ServiceApp, run
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from reuse_service.runtime import RuntimeState
from reuse_service.sandbox import probe_bubblewrap
from reuse_service.servicer import InferenceServicer, ReuseServicer

SERVICE_NAME = reuse_service_pb2.DESCRIPTOR.services_by_name["ReuseService"].full_name
INFERENCE_SERVICE_NAME = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name[
    "GRPCInferenceService"
].full_name

log = logging.getLogger("lwdock.reuse")


def build_app(settings: Settings) -> ServiceApp:
    state = RuntimeState(allow_unsandboxed=settings.allow_unsandboxed)

    def register(server: grpc.aio.Server) -> None:
        reuse_service_pb2_grpc.add_ReuseServiceServicer_to_server(ReuseServicer(state), server)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(state), server
        )

    async def on_start(handle: ServerHandle) -> None:
        state.sandbox = await probe_bubblewrap()
        if state.sandbox.available:
            log.info("sandbox available", extra={"kind": state.sandbox.kind})
        elif state.allow_unsandboxed:
            log.warning(
                "RUNNING MODEL CODE WITHOUT A SANDBOX (LWDOCK_ALLOW_UNSANDBOXED): development only",
                extra={"reason": state.sandbox.reason},
            )
        else:
            log.error("no sandbox: model code will not run", extra={"reason": state.sandbox.reason})
        # The service answers either way (it can say why it cannot run code); KServe's
        # ServerReady and ModelReady report whether model code can run.
        await handle.set_serving(SERVICE_NAME, True)
        await handle.set_serving(INFERENCE_SERVICE_NAME, True)

    return ServiceApp(
        name="reuse",
        services=[SERVICE_NAME, INFERENCE_SERVICE_NAME],
        register=register,
        on_start=on_start,
        initially_not_serving={SERVICE_NAME, INFERENCE_SERVICE_NAME},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reuse_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
