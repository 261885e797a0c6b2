"""Server errors as typed exceptions.

The SDK raises the same `lwdock.errors` classes the services raise (`InvalidArgument`,
`NotFound`, `Unauthenticated`, ...), rebuilt from the `google.rpc.Status` a server sends in the
`grpc-status-details-bin` trailer (decoded with grpcio-status by
`lwdock.server.status.from_rpc_error`): field violations, ErrorInfo reason and metadata,
ResourceInfo, precondition violations. Every such exception also carries `rpc`, an `RpcStatus`
with the gRPC status code, the request id and the field violations, so callers (and the CLI)
can print what the server said without knowing the exception's class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from lwdock import errors
from lwdock.errors import FieldViolation, LwdockError


@dataclass(frozen=True)
class RpcStatus:
    """What a failed call returned: `code` as its name (e.g. "INVALID_ARGUMENT")."""

    code: str
    message: str
    service: str = ""
    reason: str = ""
    request_id: str = ""
    field_violations: tuple[FieldViolation, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One line for the code and message, then one line per field violation."""
        lines = [f"{self.code}: {self.message}" if self.message else self.code]
        lines += [f"  {v.field}: {v.description}" for v in self.field_violations]
        return "\n".join(lines)


def _trailer(error: grpc.RpcError, key: str) -> str:
    try:
        trailing = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:  # not a call error (e.g. a channel that never connected)
        return ""
    for name, value in trailing:
        if name == key:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def from_rpc_error(error: grpc.RpcError, service: str = "") -> LwdockError:
    """The typed exception for a failed call, with `rpc` (an RpcStatus) attached."""
    from lwdock.server.status import from_rpc_error as rebuild

    try:
        typed = rebuild(error)
    except Exception:  # undecodable details: keep the code and message
        typed = LwdockError(str(getattr(error, "details", lambda: "")() or error))
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    violations: list[FieldViolation] = list(getattr(typed, "violations", []) or [])
    field_violations = tuple(v for v in violations if isinstance(v, FieldViolation))
    typed.rpc = RpcStatus(  # type: ignore[attr-defined]
        code=code.name if code is not None else "UNKNOWN",
        message=typed.message,
        service=service,
        reason=typed.reason,
        request_id=_trailer(error, "x-request-id"),
        field_violations=field_violations,
    )
    return typed


def rpc_status(error: BaseException) -> RpcStatus | None:
    """The server status behind an exception the SDK raised, or None for local errors."""
    status = getattr(error, "rpc", None)
    return status if isinstance(status, RpcStatus) else None


class CheckTimeout(errors.DeadlineExceeded):
    """A submitted learnware was still not checked when the wait gave up."""

    default_reason = "CHECK_WAIT_TIMEOUT"

    def __init__(self, learnware_id: str, state: str, waited_s: float) -> None:
        super().__init__(
            f"learnware {learnware_id} still {state} after waiting {waited_s:.0f} s",
            metadata={"learnware": learnware_id, "state": state},
        )
        self.learnware_id = learnware_id
        self.state = state


class IntegrityError(errors.DataLoss):
    """A download's bytes do not match the sha256 the registry announced."""

    default_reason = "SHA256_MISMATCH"


__all__ = [
    "CheckTimeout",
    "IntegrityError",
    "RpcStatus",
    "from_rpc_error",
    "rpc_status",
]
