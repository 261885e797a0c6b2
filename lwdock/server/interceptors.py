"""Server interceptors, outermost first: metrics -> access log -> auth -> error mapping.

Each one wraps the method handler's behaviour with an async "around" function, for all four
call kinds; `_wrap` does the plumbing once so each interceptor is only its own logic.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc

from lwdock import errors
from lwdock.server import metrics
from lwdock.server.context import (
    ANONYMOUS,
    REQUEST_ID_KEY,
    Principal,
    current_principal,
    current_request_id,
    set_principal,
    set_request_id,
)
from lwdock.server.status import internal_status_proto, to_grpc_status, to_status_proto
from lwdock.tokens import hash_token

log = logging.getLogger("lwdock.rpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
# around(call, context, method) runs `call()` (which runs the handler) with extra logic.
Around = Callable[[Callable[[], Awaitable[Any]], grpc.aio.ServicerContext, str], Awaitable[Any]]


def _split_method(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2) if method.count("/") >= 2 else ("", "", method)
    return service, name


def _call_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _wrap(handler: grpc.RpcMethodHandler, method: str, around: Around) -> grpc.RpcMethodHandler:
    """A handler like `handler` whose behaviour runs inside `around`."""
    if handler.response_streaming:
        behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
        assert behavior is not None

        if inspect.isasyncgenfunction(behavior):
            # Items are written through the context inside `around`, so errors raised while
            # streaming are seen (and mapped) by every interceptor.
            async def new_behavior(request: Any, context: grpc.aio.ServicerContext) -> None:
                async def run() -> None:
                    async for item in behavior(request, context):
                        await context.write(item)

                await around(run, context, method)
        else:

            async def new_behavior(request: Any, context: grpc.aio.ServicerContext) -> None:
                await around(lambda: behavior(request, context), context, method)

        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
    else:
        behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
        assert behavior is not None

        async def new_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
            return await around(lambda: behavior(request, context), context, method)

        factory = (
            grpc.stream_unary_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_unary_rpc_method_handler
        )
    return factory(
        new_behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _AroundInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrap_handler(handler, handler_call_details)

    def _wrap_handler(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        return _wrap(handler, details.method, self.around)

    async def around(
        self, call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        raise NotImplementedError


def _code_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if code is not None:
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class MetricsInterceptor(_AroundInterceptor):
    """go-grpc-prometheus metrics: started, handled (by code) and handling seconds."""

    def _wrap_handler(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        call_type = _call_type(handler)

        async def around(
            call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
        ) -> Any:
            service, name = _split_method(method)
            metrics.STARTED.labels(call_type, service, name).inc()
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                return await call()
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = _code_of(context, error)
                metrics.HANDLED.labels(call_type, service, name, code.name).inc()
                metrics.HANDLING_SECONDS.labels(call_type, service, name).observe(
                    time.perf_counter() - start
                )

        return _wrap(handler, details.method, around)


class AccessLogInterceptor(_AroundInterceptor):
    """One structured line per call; accepts or makes an x-request-id and echoes it."""

    async def around(
        self, call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex)
        set_request_id(request_id)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            return await call()
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = _code_of(context, error)
            log.info(
                "rpc",
                extra={
                    "method": method,
                    "peer": context.peer(),
                    "code": code.name,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                    "principal": current_principal().name,
                },
            )


@runtime_checkable
class TokenVerifier(Protocol):
    """Resolves a bearer token to its Principal; None for an unknown (or revoked) token.

    May raise `lwdock.errors.Unavailable` when the store behind it cannot answer now (the
    call then fails UNAVAILABLE, so clients retry, instead of UNAUTHENTICATED).
    """

    async def verify(self, token: str) -> Principal | None: ...


class CompositeTokenVerifier:
    """Asks each verifier in turn; the first that knows the token wins."""

    def __init__(self, *verifiers: TokenVerifier) -> None:
        self.verifiers = verifiers

    async def verify(self, token: str) -> Principal | None:
        for verifier in self.verifiers:
            found = await verifier.verify(token)
            if found is not None:
                return found
        return None


class TokenStore:
    """Verifies bearer tokens against sha256 hashes kept in a JSON file (a TokenVerifier).

    File format: {"<sha256 hex of token>": {"principal": "users/alice", "role": "admin"}}.
    The file is re-read when it changes, so tokens can be added without a restart.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._tokens: dict[str, Principal] = {}

    def _reload(self) -> None:
        if self.path is None or not self.path.exists():
            self._tokens = {}
            return
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return
        raw = json.loads(self.path.read_text())
        self._tokens = {h: Principal(v["principal"], v["role"]) for h, v in raw.items()}
        self._mtime = mtime

    def lookup(self, token: str) -> Principal | None:
        self._reload()
        return self._tokens.get(hash_token(token))

    async def verify(self, token: str) -> Principal | None:
        return self.lookup(token)


EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIX = "/grpc.reflection."


class AuthInterceptor(_AroundInterceptor):
    """`authorization: Bearer <token>` -> the caller's Principal (a contextvar).

    Health is always open; reflection is open when `reflection_public`; other calls without
    a token run as anonymous when `allow_anonymous`, else UNAUTHENTICATED. A token that is
    present but unknown is always UNAUTHENTICATED; one the verifier cannot check now (its
    database is down) is UNAVAILABLE. On open methods a bad token runs as anonymous.
    """

    def __init__(
        self, store: TokenVerifier, *, domain: str, allow_anonymous: bool, reflection_public: bool
    ) -> None:
        self.store = store
        self.domain = domain
        self.allow_anonymous = allow_anonymous
        self.reflection_public = reflection_public

    async def around(
        self, call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        open_method = method.startswith(EXEMPT_PREFIXES) or (
            self.reflection_public and method.startswith(REFLECTION_PREFIX)
        )
        metadata = dict(context.invocation_metadata() or ())
        header = str(metadata.get("authorization", ""))
        principal = ANONYMOUS
        if header:
            scheme, _, token = header.partition(" ")
            found: Principal | None = None
            if scheme.lower() == "bearer":
                try:
                    found = await self.store.verify(token.strip())
                except errors.LwdockError as error:
                    if not open_method:
                        await abort_with_error(context, error, self.domain)
            if found is None and not open_method:
                await abort_with_error(
                    context,
                    errors.Unauthenticated("invalid or revoked token", reason="BAD_TOKEN"),
                    self.domain,
                )
            principal = found or ANONYMOUS
        elif not (open_method or self.allow_anonymous):
            await abort_with_error(
                context,
                errors.Unauthenticated(
                    "this call needs `authorization: Bearer <token>` metadata",
                    reason="TOKEN_MISSING",
                ),
                self.domain,
            )
        set_principal(principal)
        return await call()


async def abort_with_error(
    context: grpc.aio.ServicerContext, error: errors.LwdockError, domain: str
) -> None:
    """End the call with the google.rpc.Status of `error` (raises grpc.aio.AbortError)."""
    status = to_grpc_status(to_status_proto(error, domain))
    await context.abort(status.code, status.details, _with_request_id(status.trailing_metadata))


def _with_request_id(trailing: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    request_id = current_request_id()
    return (*trailing, (REQUEST_ID_KEY, request_id)) if request_id else trailing


GENERATED_UNIMPLEMENTED = "Method not implemented!"


class ErrorMappingInterceptor(_AroundInterceptor):
    """Innermost: domain errors become google.rpc.Status with details; bugs become INTERNAL."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def around(
        self, call: Callable[[], Awaitable[Any]], context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        try:
            result = await call()
        except errors.LwdockError as error:
            await abort_with_error(context, error, self.domain)
        except grpc.aio.AbortError:
            raise
        except NotImplementedError as error:
            # The generated servicer base classes raise this for methods a service has not
            # implemented yet; say so clearly instead of protoc's generic text.
            detail = str(error)
            if not detail or detail == GENERATED_UNIMPLEMENTED:
                detail = (
                    f"{method} is declared in the API but not implemented yet by this server "
                    "version"
                )
            await abort_with_error(
                context, errors.Unimplemented(detail, metadata={"method": method}), self.domain
            )
        except Exception:
            log.exception("unhandled error", extra={"method": method})
            status = to_grpc_status(internal_status_proto(self.domain, current_request_id()))
            await context.abort(
                status.code, status.details, _with_request_id(status.trailing_metadata)
            )
        else:
            request_id = current_request_id()
            if request_id:  # added to what the handler set (e.g. a download's sha256)
                context.set_trailing_metadata(
                    (*(context.trailing_metadata() or ()), (REQUEST_ID_KEY, request_id))
                )
            return result
