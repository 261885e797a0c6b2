"""The SDK's channels: `lwdock.channels`' options (retry service config, keepalive, message
size) with the bearer token and x-request-id on every call type.

grpc.aio sorts a channel's interceptors by type with if/elif (`grpc.aio.Channel.__init__`), so
one object implementing all four interceptor interfaces is used for unary-unary calls only;
streaming calls (uploads, downloads, StreamPredict, CreateReuser) would go out without the
token. Hence one small interceptor per call type here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from lwdock.channels import CLIENT_OPTIONS
from lwdock.server.context import outgoing_metadata


class _AddMetadata:
    def __init__(self, token: str | None) -> None:
        self.token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        auth = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        for key, value in (*auth, *outgoing_metadata()):
            if key not in metadata:
                metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryUnary(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _AddMetadata._call  # type: ignore[assignment]


class _UnaryStream(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _AddMetadata._call  # type: ignore[assignment]


class _StreamUnary(_AddMetadata, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _AddMetadata._call  # type: ignore[assignment]


class _StreamStream(_AddMetadata, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _AddMetadata._call  # type: ignore[assignment]


def client_channel(target: str, token: str | None = None) -> grpc.aio.Channel:
    """An insecure aio channel to `target` whose every call carries the token."""
    interceptors = [cls(token) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
    return grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS, interceptors=interceptors)
