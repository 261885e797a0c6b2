"""Client channels as the suite's services and SDK open them.

- Retries: the service config below (AIP-194: only UNAVAILABLE, only idempotent methods).
  Clients in other languages copy `SERVICE_CONFIG` (also in docs) as their channel config.
- Keepalive matched with the servers' settings (lwdock.server.bootstrap.server_options).
- Every call carries `authorization: Bearer <token>` when a token is given, and the
  x-request-id of the call being served, so one request id follows a request across services.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from lwdock import tracing
from lwdock.server.context import outgoing_metadata

_RETRY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [
                {"service": "lwdock.search.v1.SearchService"},
                {"service": "lwdock.spec.v1.SpecService", "method": "ComputeSpecificationDistance"},
                {"service": "lwdock.spec.v1.SpecService", "method": "SampleSpecification"},
                {"service": "lwdock.spec.v1.SpecService", "method": "EmbedSpecification"},
                {"service": "lwdock.registry.v1.RegistryService", "method": "GetLearnware"},
                {"service": "lwdock.registry.v1.RegistryService", "method": "ListLearnwares"},
                {"service": "lwdock.registry.v1.RegistryService", "method": "GetSpecification"},
                {
                    "service": "lwdock.registry.v1.RegistryService",
                    "method": "GetSemanticVocabulary",
                },
                {"service": "lwdock.reuse.v1.ReuseService", "method": "Predict"},
                {"service": "lwdock.reuse.v1.ReuseService", "method": "GetRuntimeInfo"},
                {"service": "grpc.health.v1.Health", "method": "Check"},
            ],
            "timeout": "30s",
            "retryPolicy": _RETRY,
        }
    ],
    "loadBalancingConfig": [{"round_robin": {}}],
}

CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    auth = (("authorization", f"Bearer {token}"),) if token else ()
    return (*auth, *outgoing_metadata())


class _MetadataInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, token: str | None) -> None:
        self.token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in _metadata(self.token):
            if key not in metadata:
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    intercept_unary_unary = _call  # type: ignore[assignment]
    intercept_unary_stream = _call  # type: ignore[assignment]
    intercept_stream_unary = _call  # type: ignore[assignment]
    intercept_stream_stream = _call  # type: ignore[assignment]


class _UnaryUnaryMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, shared: _MetadataInterceptor) -> None:
        self.shared = shared

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.shared._call(continuation, details, request)


class _UnaryStreamMetadata(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, shared: _MetadataInterceptor) -> None:
        self.shared = shared

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.shared._call(continuation, details, request)


class _StreamUnaryMetadata(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, shared: _MetadataInterceptor) -> None:
        self.shared = shared

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self.shared._call(continuation, details, requests)


class _StreamStreamMetadata(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, shared: _MetadataInterceptor) -> None:
        self.shared = shared

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self.shared._call(continuation, details, requests)


def _metadata_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind: grpc.aio files an interceptor under the first kind it
    implements (an if/elif on isinstance), so one object for all four kinds would only ever
    see unary-unary calls, and streamed calls would leave without token or request id."""
    shared = _MetadataInterceptor(token)
    return [
        _UnaryUnaryMetadata(shared),
        _UnaryStreamMetadata(shared),
        _StreamUnaryMetadata(shared),
        _StreamStreamMetadata(shared),
    ]


def aio_channel(target: str, *, token: str | None = None) -> grpc.aio.Channel:
    """An insecure (loopback / in-cluster) aio channel with retries, keepalive, metadata."""
    return grpc.aio.insecure_channel(
        target,
        options=CLIENT_OPTIONS,
        # Tracing's client spans (when LWDOCK_OTEL_EXPORTER is on) inject `traceparent`.
        interceptors=[*_metadata_interceptors(token), *tracing.client_interceptors()],
    )
