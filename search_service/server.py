"""Wiring of search_service."""

from __future__ import annotations

import argparse

import grpc

from lwdock.search.v1 import search_service_pb2, search_service_pb2_grpc
from lwdock.server.bootstrap import ServiceApp, run
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from search_service.index import SearchIndex
from search_service.servicer import SearchServicer

SERVICE_NAME = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name


def build_app(settings: Settings) -> ServiceApp:
    index = SearchIndex()

    def register(server: grpc.aio.Server) -> None:
        search_service_pb2_grpc.add_SearchServiceServicer_to_server(SearchServicer(index), server)

    return ServiceApp(name="search", services=[SERVICE_NAME], register=register)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="search_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
