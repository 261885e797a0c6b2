"""The one way every learnware-dock service starts, serves and stops.

A service describes itself as a `ServiceApp` (its gRPC service names, how to add its
servicers, start/stop hooks). `start` builds a `grpc.aio` server with health, reflection,
the interceptor chain and message-size/keepalive options; `serve` runs it until SIGTERM or
SIGINT and shuts down gracefully: health NOT_SERVING, a short drain, then `stop(grace)`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lwdock import tracing
from lwdock.server.interceptors import (
    AccessLogInterceptor,
    AuthInterceptor,
    CompositeTokenVerifier,
    ErrorMappingInterceptor,
    MetricsInterceptor,
    TokenStore,
    TokenVerifier,
)
from lwdock.server.logs import configure_logging
from lwdock.server.metrics import start_metrics_server
from lwdock.settings import DEFAULT_PORTS, Settings

log = logging.getLogger("lwdock.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceApp:
    """What a service contributes to the shared server."""

    # Short name: "spec", "registry", "search", "reuse" (default port, log field, domain).
    name: str
    # Fully qualified gRPC services it serves, e.g. "lwdock.spec.v1.SpecService".
    services: list[str]
    # Adds the servicers to the server.
    register: Callable[[grpc.aio.Server], None]
    # Called after the server started / before the server stops. `on_start` gets the health
    # servicer so a service can report readiness (e.g. NOT_SERVING until its DB answers).
    on_start: Callable[[ServerHandle], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    # Services that start NOT_SERVING and are switched on by the service itself.
    initially_not_serving: set[str] = field(default_factory=set)
    # Verifies bearer tokens the tokens file does not know (the registry: its database).
    token_verifier: TokenVerifier | None = None
    # Fields added to every log line of the process (a worker's number).
    log_fields: dict[str, object] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return f"lwdock.{self.name}"


@dataclass
class ServerHandle:
    app: ServiceApp
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, service: str, serving: bool) -> None:
        await self.health.set(service, SERVING if serving else NOT_SERVING)

    async def stop(self, settings: Settings) -> None:
        """Graceful: NOT_SERVING everywhere, drain, stop accepting, give calls `grace_s`."""
        await self.health.enter_graceful_shutdown()
        if settings.drain_delay_s > 0:
            await asyncio.sleep(settings.drain_delay_s)
        await self.server.stop(settings.grace_s)
        if self.app.on_stop is not None:
            await self.app.on_stop()


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        # One process per port (a second server on the same port must fail, not share it),
        # except for the workers of one service, which share it on purpose.
        ("grpc.so_reuseport", 1 if settings.share_port else 0),
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_receive_message_bytes),
        # Keepalive, matched with lwdock.channels' client settings (GRPC.md section 3).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
        ("grpc.max_connection_age_ms", 30 * 60_000),
        ("grpc.max_connection_age_grace_ms", 60_000),
    ]


async def start(app: ServiceApp, settings: Settings) -> ServerHandle:
    """Build, bind and start the server. Port: settings.port, else the service default."""
    verifier: TokenVerifier = TokenStore(settings.tokens_file)
    if app.token_verifier is not None:
        verifier = CompositeTokenVerifier(verifier, app.token_verifier)
    # Tracing (LWDOCK_OTEL_EXPORTER) is outermost, so its span covers everything else.
    tracing.configure(settings.otel_exporter, app.name)
    interceptors = [
        *tracing.server_interceptors(),
        MetricsInterceptor(),
        AccessLogInterceptor(),
        AuthInterceptor(
            verifier,
            domain=app.domain,
            allow_anonymous=settings.allow_anonymous,
            reflection_public=settings.reflection_public,
        ),
        ErrorMappingInterceptor(app.domain),
    ]
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    app.register(server)
    reflection.enable_server_reflection(
        [
            *app.services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = settings.port if settings.port is not None else DEFAULT_PORTS.get(app.name, 0)
    bound = server.add_insecure_port(f"{settings.host}:{port}")
    await server.start()
    for service in app.services:
        await health_servicer.set(
            service, NOT_SERVING if service in app.initially_not_serving else SERVING
        )
    await health_servicer.set("", SERVING)
    handle = ServerHandle(app, server, health_servicer, bound)
    if settings.metrics_port is not None:
        handle.metrics_port = start_metrics_server(settings.host, settings.metrics_port)
    if app.on_start is not None:
        await app.on_start(handle)
    log.info(
        "listening",
        extra={
            "address": f"{settings.host}:{bound}",
            "services": app.services,
            "metrics_port": handle.metrics_port,
        },
    )
    return handle


async def serve(app: ServiceApp, settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    handle = await start(app, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": settings.grace_s})
    await handle.stop(settings)
    log.info("stopped")


def run(app_factory: Callable[[Settings], ServiceApp], settings: Settings) -> None:
    """Entry point of `python -m <service>`."""
    app = app_factory(settings)
    configure_logging(app.name, settings.log_level, settings.log_format, app.log_fields)
    asyncio.run(serve(app, settings))
