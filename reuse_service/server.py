"""Wiring of reuse_service: lwdock.reuse.v1, KServe v2 and Operations on one server."""

from __future__ import annotations

import argparse
import logging

import grpc
from google.longrunning import operations_pb2_grpc

from lwdock.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from lwdock.registry_client import RegistryClient
from lwdock.reuse.v1 import reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, ServiceApp, run
from lwdock.server.operations import OPERATIONS_SERVICE_NAME, OperationsServicer, OperationStore
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from reuse_service.engine import ReuseEngine
from reuse_service.fitted import ReuserStore
from reuse_service.packages import PackageStore
from reuse_service.runtime import RuntimeState
from reuse_service.sandbox import SandboxLimits, probe_bubblewrap
from reuse_service.servicer import InferenceServicer, ReuseServicer
from reuse_service.workers import WorkerPool

SERVICE_NAME = reuse_service_pb2.DESCRIPTOR.services_by_name["ReuseService"].full_name
INFERENCE_SERVICE_NAME = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name[
    "GRPCInferenceService"
].full_name

log = logging.getLogger("lwdock.reuse")


def limits_from_settings(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        memory_bytes=settings.reuse_worker_memory_mib * 1024**2,
        call_timeout_s=settings.reuse_call_timeout_s,
    )


def build_app(settings: Settings, limits: SandboxLimits | None = None) -> ServiceApp:
    state = RuntimeState(allow_unsandboxed=settings.allow_unsandboxed)
    limits = limits or limits_from_settings(settings)
    home = settings.home / "reuse"
    pool = WorkerPool(settings.reuse_max_workers)
    registry = RegistryClient(settings.registry_address, token=settings.service_token)
    packages = PackageStore(home / "packages", in_use=pool.keys)
    engine = ReuseEngine(state, limits, packages, pool, registry)
    operations = OperationStore(domain="lwdock.reuse")
    reusers = ReuserStore(home / "reusers")

    def register(server: grpc.aio.Server) -> None:
        reuse_service_pb2_grpc.add_ReuseServiceServicer_to_server(
            ReuseServicer(state, engine, reusers, operations), server
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(state, engine), server
        )
        operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(operations), server)

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

    async def on_stop() -> None:
        await operations.close()
        await pool.close()
        await registry.close()

    return ServiceApp(
        name="reuse",
        services=[SERVICE_NAME, INFERENCE_SERVICE_NAME, OPERATIONS_SERVICE_NAME],
        register=register,
        on_start=on_start,
        on_stop=on_stop,
        initially_not_serving={SERVICE_NAME, INFERENCE_SERVICE_NAME},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reuse_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
