"""Wiring of spec_service: the servicer on the shared lwdock server."""

from __future__ import annotations

import argparse

import grpc
from google.longrunning import operations_pb2_grpc

from lwdock.server.bootstrap import ServiceApp, run
from lwdock.server.operations import OPERATIONS_SERVICE_NAME, OperationsServicer, OperationStore
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from lwdock.spec.v1 import spec_service_pb2, spec_service_pb2_grpc
from spec_service.servicer import SpecServicer

SERVICE_NAME = spec_service_pb2.DESCRIPTOR.services_by_name["SpecService"].full_name


def build_app(settings: Settings) -> ServiceApp:
    operations = OperationStore(domain="lwdock.spec")

    def register(server: grpc.aio.Server) -> None:
        spec_service_pb2_grpc.add_SpecServiceServicer_to_server(
            SpecServicer(settings, operations), server
        )
        operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(operations), server)

    return ServiceApp(
        name="spec",
        services=[SERVICE_NAME, OPERATIONS_SERVICE_NAME],
        register=register,
        on_stop=operations.close,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spec_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
