"""Wiring of registry_service: servicer, PostgreSQL pool, readiness from the database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import grpc

from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, ServiceApp, run
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from registry_service.database import Database, monitor
from registry_service.servicer import RegistryServicer

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

log = logging.getLogger("lwdock.registry")


def build_app(settings: Settings) -> ServiceApp:
    db = Database(settings.database_url) if settings.database_url else None
    tasks: list[asyncio.Task[None]] = []

    def register(server: grpc.aio.Server) -> None:
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(), server)

    async def on_start(handle: ServerHandle) -> None:
        if db is None:
            log.error("no database configured (LWDOCK_DATABASE_URL): reporting NOT_SERVING")
            return
        await db.open()

        async def report(ok: bool) -> None:
            log.info("database reachable" if ok else "database unreachable")
            await handle.set_serving(SERVICE_NAME, ok)

        tasks.append(asyncio.create_task(monitor(db, report)))

    async def on_stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if db is not None:
            await db.close()

    return ServiceApp(
        name="registry",
        services=[SERVICE_NAME],
        register=register,
        on_start=on_start,
        on_stop=on_stop,
        # SERVING only once PostgreSQL answers.
        initially_not_serving={SERVICE_NAME},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="registry_service", description=__doc__)
    add_server_arguments(parser)
    run(build_app, settings_from_args(parser.parse_args(argv)))
