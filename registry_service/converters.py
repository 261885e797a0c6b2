"""Registry rows <-> protobuf messages (no I/O, no gRPC calls)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from lwdock.common.v1 import learnware_pb2, specification_pb2
from lwdock.converters import rkme_to_proto
from lwdock.errors import InvalidArgument
from lwdock.registry.v1 import resources_pb2
from lwdock.rkme.spec import RKMESpec, SpecType, parse_type
from lwdock.semantic.checker import Semantic
from registry_service.repository import (
    ChangeEventRow,
    ChangeType,
    CheckJobRow,
    LearnwareRow,
    Role,
    SpecificationRow,
    State,
    TokenRow,
    UploadRow,
)

STATE_TO_PROTO = {
    State.PENDING: learnware_pb2.LEARNWARE_STATE_PENDING,
    State.CHECKING: learnware_pb2.LEARNWARE_STATE_CHECKING,
    State.ACTIVE: learnware_pb2.LEARNWARE_STATE_ACTIVE,
    State.REJECTED: learnware_pb2.LEARNWARE_STATE_REJECTED,
    State.DELETED: learnware_pb2.LEARNWARE_STATE_DELETED,
}

CHANGE_TO_PROTO = {
    ChangeType.CREATED: resources_pb2.CHANGE_TYPE_CREATED,
    ChangeType.UPDATED: resources_pb2.CHANGE_TYPE_UPDATED,
    ChangeType.STATE_CHANGED: resources_pb2.CHANGE_TYPE_STATE_CHANGED,
    ChangeType.DELETED: resources_pb2.CHANGE_TYPE_DELETED,
}

ROLE_TO_PROTO = {
    Role.READER: resources_pb2.ROLE_READER,
    Role.DEVELOPER: resources_pb2.ROLE_DEVELOPER,
    Role.ADMIN: resources_pb2.ROLE_ADMIN,
}
ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}

_SPEC_TYPE_TO_PROTO = {
    SpecType.TABLE: specification_pb2.SPECIFICATION_TYPE_RKME_TABLE,
    SpecType.IMAGE: specification_pb2.SPECIFICATION_TYPE_RKME_IMAGE,
    SpecType.TEXT: specification_pb2.SPECIFICATION_TYPE_RKME_TEXT,
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def semantic_to_proto(stored: Mapping[str, Any]) -> Any:
    """The stored reference-JSON semantic as a SemanticSpecification message."""
    return Semantic.from_reference_dict(dict(stored), check=False).to_proto()


def specification_to_proto(spec: SpecificationRow) -> learnware_pb2.Specification:
    """With the spec JSON: the full rkme; a summary row: the rkme's type only (no z)."""
    if spec.spec_json is not None:
        rkme = rkme_to_proto(RKMESpec.from_reference_json(spec.spec_json))
    else:
        try:
            spec_type = parse_type(spec.type)
        except InvalidArgument:
            spec_type = None
        rkme = specification_pb2.RkmeSpecification(
            type=_SPEC_TYPE_TO_PROTO.get(spec_type, 0) if spec_type else 0
        )
    return learnware_pb2.Specification(name=spec.resource_name, file_name=spec.file_name, rkme=rkme)


def learnware_to_proto(
    row: LearnwareRow, specifications: Iterable[SpecificationRow] | None = None
) -> learnware_pb2.Learnware:
    specs = row.specifications if specifications is None else tuple(specifications)
    return learnware_pb2.Learnware(
        name=row.name,
        learnware_id=row.id,
        semantic_specification=semantic_to_proto(row.semantic),
        state=STATE_TO_PROTO[row.state],
        state_reason=row.state_reason,
        owner=row.owner,
        package=learnware_pb2.PackageInfo(
            sha256=row.package.sha256,
            size_bytes=row.package.size_bytes,
            content_type=row.package.content_type,
        ),
        specifications=[specification_to_proto(s) for s in specs],
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=row.etag,
    )


def change_event_to_proto(event: ChangeEventRow) -> resources_pb2.ChangeEvent:
    snapshot = event.learnware()
    return resources_pb2.ChangeEvent(
        sequence=event.sequence,
        type=CHANGE_TO_PROTO[event.type],
        learnware=snapshot.name,
        snapshot=learnware_to_proto(snapshot, event.specifications or None),
        time=timestamp(event.time),
    )


def check_report_to_proto(learnware_id: str, job: CheckJobRow) -> resources_pb2.CheckReport:
    return resources_pb2.CheckReport(
        name=f"learnwares/{learnware_id}/checkReport",
        passed=bool(job.passed),
        reason=job.reason,
        log=job.log,
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
    )


def token_to_proto(token: TokenRow) -> resources_pb2.Token:
    return resources_pb2.Token(
        name=token.name,
        principal=token.principal,
        role=ROLE_TO_PROTO[token.role],
        display_name=token.display_name,
        create_time=timestamp(token.create_time),
        expire_time=timestamp(token.expire_time),
    )


def upload_status_to_proto(upload: UploadRow) -> resources_pb2.UploadStatus:
    """A completed upload (only those are kept): all of it committed."""
    return resources_pb2.UploadStatus(
        request_id=upload.request_id,
        committed_size=upload.size_bytes,
        complete=True,
        learnware=f"learnwares/{upload.learnware_id}",
    )
