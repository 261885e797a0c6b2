"""Per-call context shared by interceptors, handlers and outgoing calls (contextvars)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Principal:
    """Who is calling: `users/alice` with a role, or the anonymous principal."""

    name: str
    role: str

    @property
    def is_anonymous(self) -> bool:
        return self.name == ANONYMOUS.name


ANONYMOUS = Principal("anonymous", "anonymous")

_request_id: ContextVar[str] = ContextVar("lwdock_request_id", default="")
_principal: ContextVar[Principal] = ContextVar("lwdock_principal", default=ANONYMOUS)

REQUEST_ID_KEY = "x-request-id"


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str) -> None:
    _request_id.set(value)


def current_principal() -> Principal:
    return _principal.get()


def set_principal(value: Principal) -> None:
    _principal.set(value)


def downstream_timeout(
    context: grpc.aio.ServicerContext, *, margin_s: float = 0.05, default_s: float = 30.0
) -> float:
    """Seconds to give a downstream call so it ends before our own deadline.

    gRPC Python does not propagate deadlines: pass this as `timeout=` on every outgoing call.
    Without a caller deadline, `default_s` applies (we never call without one).
    """
    remaining = context.time_remaining()
    if remaining is None:
        return default_s
    return max(0.0, remaining - margin_s)


@contextlib.contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Background work (a check job, a change-feed follower) under a request id of its own, so
    its log lines and the calls it makes (forwarded by lwdock.channels) carry one id. A new
    id unless one is given; the previous one is restored afterwards."""
    value = request_id or uuid.uuid4().hex
    token = _request_id.set(value)
    try:
        yield value
    finally:
        _request_id.reset(token)


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata to forward on service-to-service calls: the request id of this call."""
    request_id = current_request_id()
    return ((REQUEST_ID_KEY, request_id),) if request_id else ()
