"""Optional OpenTelemetry tracing of every RPC, server and client side.

Off unless `LWDOCK_OTEL_EXPORTER` is `console` (finished spans as JSON on stdout) or `otlp`
(the standard `OTEL_EXPORTER_OTLP_*` variables; needs the `opentelemetry-exporter-otlp`
package). When on:

- every server gets `TracingInterceptor` (outermost): a SERVER span per call, named
  `<package.Service>/<Method>`, continuing the caller's trace from the W3C `traceparent`
  metadata, with the gRPC status code and the call's x-request-id as attributes;
- every channel from `lwdock.channels.aio_channel` gets opentelemetry-instrumentation-grpc's
  client interceptors: a CLIENT span per call that injects `traceparent`, so one request keeps
  one trace id across services.

The SDK is imported only when tracing is on: `opentelemetry-*` are the optional `tracing`
extra. One provider per process (several services in one process, as in the tests, share it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from lwdock.server.context import current_request_id
from lwdock.server.interceptors import _AroundInterceptor, _code_of, _split_method

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("lwdock.tracing")

EXPORTERS = ("none", "console", "otlp")
REQUEST_ID_ATTRIBUTE = "lwdock.request_id"

_provider: TracerProvider | None = None


def enabled() -> bool:
    return _provider is not None


def provider() -> TracerProvider | None:
    return _provider


def enable(tracer_provider: TracerProvider) -> None:
    """Trace servers started and channels opened from now on with `tracer_provider`."""
    global _provider
    _provider = tracer_provider


def disable() -> None:
    """Stop tracing new servers and channels (the provider itself is left as it is)."""
    global _provider
    _provider = None


def configure(exporter: str, service: str) -> bool:
    """Install a provider for `exporter` (a LWDOCK_OTEL_EXPORTER value) unless one is on
    already; also the process's global provider, for code that uses trace.get_tracer.
    False when tracing stays off."""
    if exporter not in EXPORTERS:
        raise ValueError(f"LWDOCK_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}")
    if exporter == "none":
        return enabled()
    if enabled():
        return True
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError(
                "LWDOCK_OTEL_EXPORTER=otlp needs the opentelemetry-exporter-otlp package"
            ) from exc
        span_exporter = OTLPSpanExporter()
    tracer_provider = TracerProvider(
        resource=Resource.create({"service.name": f"lwdock-{service}"})
    )
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    enable(tracer_provider)
    log.info("tracing on", extra={"exporter": exporter})
    return True


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """[TracingInterceptor] while tracing is on, else []."""
    return [TracingInterceptor(_provider)] if _provider is not None else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """opentelemetry-instrumentation-grpc's aio client interceptors while tracing is on."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider))


class TracingInterceptor(_AroundInterceptor):
    """A SERVER span around each call, child of the caller's span when it sent one.

    Written on lwdock's own interceptor plumbing (all four call kinds, streamed errors seen)
    rather than opentelemetry-instrumentation-grpc's server interceptor, which expects every
    streaming handler to be an async generator.
    """

    def __init__(self, tracer_provider: TracerProvider) -> None:
        from opentelemetry import trace

        self.tracer = trace.get_tracer("lwdock.server", tracer_provider=tracer_provider)

    async def around(
        self, call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        service, name = _split_method(method)
        with self.tracer.start_as_current_span(
            method.lstrip("/"),
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            error: BaseException | None = None
            try:
                return await call()
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = _code_of(context, error)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                request_id = current_request_id()
                if request_id:  # set by the access log interceptor inside this one
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
                if code != grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                if error is not None and not isinstance(error, grpc.aio.AbortError):
                    span.record_exception(error)
