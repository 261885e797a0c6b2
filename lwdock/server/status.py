"""Domain errors -> gRPC status codes and google.rpc.Status details, in one place.

Every error carries exactly one ErrorInfo (AIP-193: reason, a fixed domain per service,
metadata) plus the detail its kind calls for (BadRequest, ResourceInfo, PreconditionFailure,
QuotaFailure, RetryInfo). `from_rpc_error` turns such a status back into the domain error on
the client side.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from lwdock import errors

# Checked in order; subclasses before their bases.
STATUS_CODES: dict[type[errors.LwdockError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.LearnwareModelFailed: grpc.StatusCode.INTERNAL,
}

INTERNAL_MESSAGE = "Internal server error"

# Error details travel in trailing metadata, which clients cap (16 KiB by default): keep every
# status well below that, however many violations a request has.
MAX_VIOLATIONS = 40
MAX_TEXT_CHARS = 300
MAX_MESSAGE_CHARS = 2000


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code_for(error: errors.LwdockError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _kind_detail(error: errors.LwdockError) -> object | None:
    if isinstance(error, errors.InvalidArgument) and error.violations:
        shown = error.violations[:MAX_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field), description=_clip(v.description)
            )
            for v in shown
        ]
        if len(error.violations) > len(shown):
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field="...",
                    description=f"{len(error.violations) - len(shown)} more violations not shown",
                )
            )
        return error_details_pb2.BadRequest(field_violations=violations)
    if isinstance(error, errors.NotFound | errors.AlreadyExists):
        return error_details_pb2.ResourceInfo(
            resource_type=error.resource_type,
            resource_name=error.resource_name,
            description=error.message,
        )
    if isinstance(error, errors.FailedPrecondition) and error.violations:
        return error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in error.violations
            ]
        )
    if isinstance(error, errors.ResourceExhausted):
        return error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=error.subject, description=error.message
                )
            ]
        )
    if isinstance(error, errors.Unavailable):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_delay_s * 1e9))
        return retry
    return None


def to_status_proto(error: errors.LwdockError, domain: str) -> status_pb2.Status:
    """The google.rpc.Status for a domain error raised inside service `domain`."""
    code = code_for(error)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details = [_pack(info)]
    kind = _kind_detail(error)
    if kind is not None:
        details.append(_pack(kind))
    return status_pb2.Status(
        code=code.value[0], message=_clip(error.message, MAX_MESSAGE_CHARS), details=details
    )


def internal_status_proto(domain: str, request_id: str = "") -> status_pb2.Status:
    """A fixed message for our own broken invariants; the cause goes to the log only."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=domain, metadata={"request_id": request_id} if request_id else {}
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE, details=[_pack(info)]
    )


def to_grpc_status(proto: status_pb2.Status) -> grpc.Status:
    return rpc_status.to_status(proto)


_BY_CODE: dict[grpc.StatusCode, type[errors.LwdockError]] = {
    code: cls for cls, code in STATUS_CODES.items() if cls is not errors.LearnwareModelFailed
}


def from_rpc_error(error: grpc.RpcError) -> errors.LwdockError:
    """Client side: rebuild the domain error (with field violations) from a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message = error.details() or ""  # type: ignore[attr-defined]
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    resource = error_details_pb2.ResourceInfo()
    precondition = error_details_pb2.PreconditionFailure()
    for detail in status.details if status is not None else []:
        for target in (info, bad_request, resource, precondition):
            if detail.Is(target.DESCRIPTOR):
                detail.Unpack(target)
    cls = _BY_CODE.get(code, errors.LwdockError)
    result: errors.LwdockError
    if cls is errors.InvalidArgument:
        result = errors.InvalidArgument(
            message,
            [errors.FieldViolation(v.field, v.description) for v in bad_request.field_violations],
        )
    elif cls in (errors.NotFound, errors.AlreadyExists):
        result = cls(resource.resource_type, resource.resource_name, message)  # type: ignore[call-arg]
    elif cls is errors.FailedPrecondition:
        result = errors.FailedPrecondition(
            message,
            [
                errors.PreconditionViolation(v.type, v.subject, v.description)
                for v in precondition.violations
            ],
        )
    elif cls is errors.ResourceExhausted:
        result = errors.ResourceExhausted(message)
    elif cls is errors.Unavailable:
        result = errors.Unavailable(message)
    else:
        result = cls(message)
    if info.reason:
        result.reason = info.reason
        result.metadata = dict(info.metadata)
    return result
