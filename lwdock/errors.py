"""Domain errors of learnware-dock.

Domain code raises these; it never knows about gRPC. `lwdock.server.status` maps each class
to a status code and `google.rpc.Status` details in one place, and the SDK raises the same
classes from the details a server sends back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


class LwdockError(Exception):
    """Base of every error that crosses an API boundary.

    `reason` is the google.rpc.ErrorInfo reason (UPPER_SNAKE_CASE, <= 63 chars); `metadata`
    goes into ErrorInfo.metadata.
    """

    default_reason = "ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(LwdockError):
    """The request is malformed; `violations` names each bad field."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: list[FieldViolation] | None = None,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])

    @classmethod
    def for_field(cls, field_path: str, description: str) -> InvalidArgument:
        return cls.of([FieldViolation(field_path, description)])

    @classmethod
    def of(cls, violations: list[FieldViolation], summary: str = "") -> InvalidArgument:
        """An error whose message lists every violation (after an optional summary)."""
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(f"{summary}: {listed}" if summary else listed, violations)


class NotFound(LwdockError):
    default_reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_name: str, message: str | None = None) -> None:
        super().__init__(
            message or f"{resource_type} {resource_name!r} does not exist",
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(LwdockError):
    default_reason = "ALREADY_EXISTS"

    def __init__(self, resource_type: str, resource_name: str, message: str | None = None) -> None:
        super().__init__(
            message or f"{resource_type} {resource_name!r} already exists",
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )
        self.resource_type = resource_type
        self.resource_name = resource_name


class FailedPrecondition(LwdockError):
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: list[PreconditionViolation] | None = None,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])


class Aborted(LwdockError):
    """Concurrent modification or stale etag: re-read, then retry."""

    default_reason = "ABORTED"


class ResourceExhausted(LwdockError):
    """A size, row, memory or quota limit was exceeded."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, subject: str = "", limit: str = "") -> None:
        super().__init__(message, metadata={k: v for k, v in (("limit", limit),) if v})
        self.subject = subject
        self.limit = limit


class OutOfRange(LwdockError):
    default_reason = "OUT_OF_RANGE"


class DataLoss(LwdockError):
    default_reason = "DATA_LOSS"


class Unavailable(LwdockError):
    """A dependency is down or the server is draining; the same call may succeed later."""

    default_reason = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_delay_s: float = 1.0, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_delay_s = retry_delay_s


class DeadlineExceeded(LwdockError):
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(LwdockError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(LwdockError):
    default_reason = "PERMISSION_DENIED"


class Unimplemented(LwdockError):
    default_reason = "NOT_IMPLEMENTED"


class LearnwareModelFailed(LwdockError):
    """A learnware's own code raised or returned a wrong shape (INTERNAL)."""

    default_reason = "LEARNWARE_MODEL_FAILED"

    def __init__(self, learnware: str, message: str) -> None:
        super().__init__(message, metadata={"learnware": learnware})
        self.learnware = learnware
