"""Wiring of spec_service: the servicer on the shared lwdock server."""

from __future__ import annotations

import argparse

import grpc

from lwdock.server.bootstrap import ServiceApp, run
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from lwdock.spec.v1 import spec_service_pb2, spec_service_pb2_grpc
from spec_service.servicer import SpecServicer

SERVICE_NAME = spec_service_pb2.DESCRIPTOR.services_by_name["SpecService"].full_name


def build_app(settings: Settings) -> ServiceApp:
    def register(server: grpc.aio.Server) -> None:
        spec_service_pb2_grpc.add_SpecServiceServicer_to_server(SpecServicer(), server)

    return ServiceApp(name="spec", services=[SERVICE_NAME], register=register)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spec_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
