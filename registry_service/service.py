"""The registry's domain layer: authorization, semantic handling, package validation, blob
storage and the repository, between the thin servicer and the data layer.

Nothing in a package is imported or executed: `validate_package` reads it as data only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from lwdock.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from lwdock.package import ValidatedPackage, validate_package
from lwdock.semantic.checker import Semantic, check_semantic
from lwdock.server.context import Principal
from lwdock.tokens import hash_token, new_token
from registry_service.blobstore import BlobStore
from registry_service.repository import (
    ChangeEventRow,
    CheckJobRow,
    LearnwareFilter,
    LearnwareRow,
    NewSpecification,
    Order,
    PackageInfo,
    Page,
    Repository,
    Role,
    SpecificationRow,
    State,
    TokenRow,
    UploadKind,
    UploadRow,
)

ADMIN = "admin"
DEVELOPER = "developer"
WRITER_ROLES = frozenset({ADMIN, DEVELOPER})

_LEARNWARE_NAME = re.compile(r"^learnwares/([^/]+)$")
_SPEC_NAME = re.compile(r"^learnwares/([^/]+)/specifications/(.+)$")
_REPORT_NAME = re.compile(r"^learnwares/([^/]+)/checkReport$")
_TOKEN_NAME = re.compile(r"^tokens/([^/]+)$")

# Semantic fields (proto names) whose change sends a learnware back to PENDING.
RECHECK_FIELDS = frozenset({"data_type", "task", "input", "output"})
SEMANTIC_FIELDS = (
    "data_type",
    "task",
    "library",
    "scenarios",
    "license",
    "name",
    "description",
    "input",
    "output",
    "model",
)
_MASK_PREFIX = "semantic_specification"


# ---------------------------------------------------------------------------------------------
# names


def parse_learnware_name(name: str, field: str = "name") -> str:
    match = _LEARNWARE_NAME.match(name)
    if not match:
        raise InvalidArgument.for_field(field, f"expected `learnwares/{{id}}`, got {name!r}")
    return match.group(1)


def parse_specification_name(name: str) -> tuple[str, str]:
    match = _SPEC_NAME.match(name)
    if not match:
        raise InvalidArgument.for_field(
            "name", f"expected `learnwares/{{id}}/specifications/{{file}}`, got {name!r}"
        )
    return match.group(1), match.group(2)


def parse_report_name(name: str) -> str:
    match = _REPORT_NAME.match(name)
    if not match:
        raise InvalidArgument.for_field(
            "name", f"expected `learnwares/{{id}}/checkReport`, got {name!r}"
        )
    return match.group(1)


def parse_token_name(name: str) -> str:
    match = _TOKEN_NAME.match(name)
    if not match:
        raise InvalidArgument.for_field("name", f"expected `tokens/{{id}}`, got {name!r}")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# filters

_FILTER_FIELDS = ("state", "data_type", "task", "library", "license", "owner", "scenario", "name")
_TERM = re.compile(r'^\s*([a-z_]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*$')
_AND = re.compile(r"\s+AND\s+")


def parse_filter(text: str, *, show_deleted: bool = False) -> LearnwareFilter:
    """AIP-160 subset: `field = value` terms joined by AND (values bare or double-quoted)."""
    values: dict[str, Any] = {"show_deleted": show_deleted}
    states: set[State] = set()
    scenarios: list[str] = []
    if not text.strip():
        return LearnwareFilter(show_deleted=show_deleted)
    for term in _AND.split(text.strip()):
        match = _TERM.match(term)
        if not match:
            raise InvalidArgument.for_field(
                "filter", f"cannot parse {term!r}; use `field = value` terms joined by AND"
            )
        key, raw = match.groups()
        value = json.loads(raw) if raw.startswith('"') else raw
        if key not in _FILTER_FIELDS:
            raise InvalidArgument.for_field(
                "filter", f"unknown field {key!r}; filterable: {', '.join(_FILTER_FIELDS)}"
            )
        if key == "state":
            name = value.upper().removeprefix("LEARNWARE_STATE_")
            try:
                states.add(State(name))
            except ValueError:
                raise InvalidArgument.for_field(
                    "filter", f"unknown state {value!r}; one of {[s.value for s in State]}"
                ) from None
            if len(states) > 1:
                raise InvalidArgument.for_field("filter", "state may be given once")
        elif key == "scenario":
            scenarios.append(value)
        elif key == "name":
            values["name_contains"] = value
        else:
            if key in values:
                raise InvalidArgument.for_field("filter", f"{key} may be given once")
            values[key] = value
    if State.DELETED in states:
        values["show_deleted"] = True
    return LearnwareFilter(states=frozenset(states), scenarios=tuple(scenarios), **values)


# ---------------------------------------------------------------------------------------------
# semantic helpers


def parse_semantic(proto: Any | None, json_text: str | None, prefix: str) -> Semantic:
    """From the header's oneof: a SemanticSpecification message or the reference JSON."""
    if proto is not None:
        return Semantic.from_proto(proto)
    if json_text is not None:
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument.for_field(
                f"{prefix}.semantic_specification_json", f"not valid JSON: {exc}"
            ) from None
        return Semantic.from_reference_dict(data, check=False)
    raise InvalidArgument.for_field(
        f"{prefix}.semantic_specification",
        "required: semantic_specification or semantic_specification_json",
    )


def stored_semantic(row: LearnwareRow) -> Semantic:
    return Semantic.from_reference_dict(dict(row.semantic), check=False)


def merge_semantic(
    current: Semantic, update: Semantic, set_fields: set[str], paths: list[str]
) -> tuple[Semantic, set[str]]:
    """Apply an update mask (proto paths) to `current`; returns (merged, changed fields)."""
    if paths == ["*"] or paths == [_MASK_PREFIX]:
        fields = set(SEMANTIC_FIELDS)
    elif paths:
        fields = set()
        for path in paths:
            head, _, rest = path.partition(".")
            if head != _MASK_PREFIX or not rest:
                raise InvalidArgument.for_field(
                    "update_mask", f"only paths under `{_MASK_PREFIX}.` may change: {path!r}"
                )
            field = rest.split(".", 1)[0]
            if field not in SEMANTIC_FIELDS:
                raise InvalidArgument.for_field(
                    "update_mask", f"unknown field {path!r}; fields: {', '.join(SEMANTIC_FIELDS)}"
                )
            fields.add(field)
    else:
        fields = set_fields
    changes = {f: getattr(update, f) for f in fields}
    merged = dataclasses.replace(current, **changes)
    changed = {f for f in fields if getattr(current, f) != getattr(merged, f)}
    return merged, changed


# ---------------------------------------------------------------------------------------------
# the service


@dataclass(frozen=True)
class NewPackage:
    request_id: str
    semantic: Semantic
    data: bytes
    sha256: str
    content_type: str = "application/zip"


@dataclass(frozen=True)
class ReplacedPackage:
    request_id: str
    data: bytes
    sha256: str
    etag: str = ""


def _role(principal: Principal) -> str:
    return principal.role.lower()


def require_writer(principal: Principal, action: str) -> None:
    if principal.is_anonymous:
        raise Unauthenticated(f"{action} needs a token: send `authorization: Bearer <token>`")
    if _role(principal) not in WRITER_ROLES:
        raise PermissionDenied(
            f"{principal.name} (role {principal.role}) may not {action}; "
            "it needs the developer or admin role"
        )


def require_admin(principal: Principal, action: str) -> None:
    if principal.is_anonymous:
        raise Unauthenticated(f"{action} needs a token: send `authorization: Bearer <token>`")
    if _role(principal) != ADMIN:
        raise PermissionDenied(f"{principal.name} (role {principal.role}) may not {action}")


def require_owner(principal: Principal, row: LearnwareRow, action: str) -> None:
    require_writer(principal, action)
    if _role(principal) != ADMIN and principal.name != row.owner:
        raise PermissionDenied(f"only the owner ({row.owner}) or an admin may {action} {row.name}")


class RegistryService:
    def __init__(self, repository: Repository | None, blobs: BlobStore | None) -> None:
        self._repository = repository
        self._blobs = blobs
        # Set once migrations have been applied; calls before that are UNAVAILABLE.
        self.ready = False

    @property
    def repo(self) -> Repository:
        if self._repository is None or not self.ready:
            raise Unavailable("the registry database is not ready yet", retry_delay_s=2.0)
        return self._repository

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            raise Unavailable("the registry blob store is not configured")
        return self._blobs

    # -- learnwares ------------------------------------------------------------------------

    async def create_learnware(self, principal: Principal, upload: NewPackage) -> LearnwareRow:
        require_writer(principal, "create learnwares")
        repo = self.repo
        if upload.request_id:
            done = await repo.find_upload(upload.request_id)
            if done is not None:
                if done.kind != UploadKind.CREATE or done.sha256 != upload.sha256:
                    raise AlreadyExists(
                        "Upload",
                        upload.request_id,
                        f"request_id {upload.request_id!r} was already used for another upload",
                    )
                return await repo.get_learnware(done.learnware_id, include_deleted=True)
        validated = await asyncio.to_thread(validate_package, upload.data, upload.semantic)
        await self.blobs.put(upload.sha256, upload.data)
        return await repo.create_learnware(
            owner=principal.name,
            semantic=upload.semantic.to_reference_dict(),
            package=PackageInfo(upload.sha256, len(upload.data), upload.content_type),
            specifications=new_specifications(validated),
            request_id=upload.request_id or None,
        )

    async def replace_package(
        self, principal: Principal, learnware_id: str, upload: ReplacedPackage
    ) -> LearnwareRow:
        """A new package for a learnware (owner or admin), validated against its current
        semantic; the learnware goes back to PENDING with a new check job."""
        require_writer(principal, "replace packages")
        repo = self.repo
        if upload.request_id:
            done = await repo.find_upload(upload.request_id)
            if done is not None:
                if (
                    done.kind != UploadKind.REPLACE
                    or done.sha256 != upload.sha256
                    or done.learnware_id != learnware_id
                ):
                    raise AlreadyExists(
                        "Upload",
                        upload.request_id,
                        f"request_id {upload.request_id!r} was already used for another upload",
                    )
                return await repo.get_learnware(done.learnware_id, include_deleted=True)
        row = await repo.get_learnware(learnware_id)
        require_owner(principal, row, "replace the package of")
        if upload.etag and upload.etag != row.etag:
            raise Aborted(
                f"{row.name} changed since it was read (stale etag); re-read it",
                reason="ETAG_MISMATCH",
                metadata={"learnware": row.name},
            )
        validated = await asyncio.to_thread(validate_package, upload.data, stored_semantic(row))
        await self.blobs.put(upload.sha256, upload.data)
        return await repo.replace_package(
            learnware_id,
            PackageInfo(upload.sha256, len(upload.data), row.package.content_type),
            new_specifications(validated),
            expected_etag=upload.etag or row.etag,
            request_id=upload.request_id or None,
        )

    async def get_upload_status(self, principal: Principal, request_id: str) -> UploadRow:
        """A completed upload. Uploads are not staged while they stream, so an upload that
        is still in progress (or was interrupted) is NOT_FOUND: resend it whole."""
        require_writer(principal, "read upload status")
        if not request_id:
            raise InvalidArgument.for_field("request_id", "required")
        done = await self.repo.find_upload(request_id)
        if done is None:
            raise NotFound(
                "Upload",
                request_id,
                f"no completed upload with request_id {request_id!r}; uploads in progress "
                "are not kept, send the package again",
            )
        return done

    async def get_learnware(self, learnware_id: str) -> LearnwareRow:
        return await self.repo.get_learnware(learnware_id)

    async def list_learnwares(
        self,
        principal: Principal,
        *,
        filter_text: str,
        order_by: str,
        page_size: int,
        page_token: str,
        show_deleted: bool,
    ) -> Page[LearnwareRow]:
        if show_deleted:
            require_admin(principal, "list deleted learnwares")
        flt = parse_filter(filter_text, show_deleted=show_deleted)
        if flt.show_deleted and not show_deleted:
            require_admin(principal, "list deleted learnwares")
        return await self.repo.list_learnwares(
            flt, order=Order.parse(order_by), page_size=page_size, page_token=page_token
        )

    async def update_learnware(
        self,
        principal: Principal,
        learnware_id: str,
        update: Semantic,
        set_fields: set[str],
        paths: list[str],
        etag: str,
    ) -> LearnwareRow:
        repo = self.repo
        row = await repo.get_learnware(learnware_id)
        require_owner(principal, row, "update")
        if etag and etag != row.etag:
            raise Aborted(
                f"{row.name} changed since it was read (stale etag); re-read it",
                reason="ETAG_MISMATCH",
                metadata={"learnware": row.name},
            )
        merged, changed = merge_semantic(stored_semantic(row), update, set_fields, paths)
        check_semantic(merged)
        if not changed:
            return row
        return await repo.update_semantic(
            learnware_id,
            merged.to_reference_dict(),
            expected_etag=etag or row.etag,
            recheck=bool(changed & RECHECK_FIELDS),
        )

    async def delete_learnware(self, principal: Principal, learnware_id: str, etag: str) -> None:
        repo = self.repo
        row = await repo.get_learnware(learnware_id)
        require_owner(principal, row, "delete")
        await repo.delete_learnware(learnware_id, expected_etag=etag or None)

    async def download(
        self, learnware_id: str, offset: int, limit: int
    ) -> tuple[LearnwareRow, AsyncIterator[bytes]]:
        row = await self.repo.get_learnware(learnware_id)
        if limit < 0:
            raise InvalidArgument.for_field("read_limit", "must not be negative")
        chunks = self.blobs.read(
            row.package.sha256, offset, limit or None, chunk_size=1024**2, verify=False
        )
        return row, chunks

    async def get_specification(self, learnware_id: str, name: str) -> SpecificationRow:
        return await self.repo.get_specification(learnware_id, name)

    async def get_check_report(self, learnware_id: str) -> CheckJobRow:
        repo = self.repo
        await repo.get_learnware(learnware_id)
        job = await repo.latest_check_job(learnware_id, finished_only=True)
        if job is None:
            raise NotFound(
                "CheckReport",
                f"learnwares/{learnware_id}/checkReport",
                f"learnwares/{learnware_id} has no finished check yet",
            )
        return job

    def watch(self, since: int) -> AsyncIterator[ChangeEventRow | None]:
        """The change feed after `since`, with one None marking the end of the replay."""
        if since < 0:
            raise InvalidArgument.for_field("since_sequence", "must not be negative")
        return self.repo.watch(since, with_specifications=True, mark_caught_up=True)

    # -- tokens ----------------------------------------------------------------------------

    async def create_token(
        self, principal: Principal, owner: str, role: Role, display_name: str
    ) -> tuple[TokenRow, str]:
        require_admin(principal, "create tokens")
        if not owner:
            raise InvalidArgument.for_field("principal", "required, e.g. users/alice")
        secret = new_token()
        row = await self.repo.create_token(
            principal=owner, role=role, token_sha256=hash_token(secret), display_name=display_name
        )
        return row, secret

    async def list_tokens(
        self, principal: Principal, page_size: int, page_token: str
    ) -> Page[TokenRow]:
        if principal.is_anonymous:
            raise Unauthenticated("listing tokens needs a token")
        only = None if _role(principal) == ADMIN else principal.name
        return await self.repo.list_tokens(
            principal=only, page_size=page_size, page_token=page_token
        )

    async def delete_token(self, principal: Principal, token_id: str) -> None:
        if principal.is_anonymous:
            raise Unauthenticated("revoking tokens needs a token")
        repo = self.repo
        token = await repo.get_token(token_id)
        if _role(principal) != ADMIN and token.principal != principal.name:
            raise PermissionDenied(f"{principal.name} may not revoke {token.name}")
        await repo.revoke_token(token_id)


def new_specifications(validated: ValidatedPackage) -> Sequence[NewSpecification]:
    specs = []
    for type_name, spec in validated.stat_specs.items():
        file_name = validated.stat_spec_files[type_name]
        specs.append(
            NewSpecification(
                name=file_name,
                type=type_name,
                spec_json=spec.to_reference_json(),
                dimension=int(spec.flat_z.shape[1]),
                file_name=file_name,
            )
        )
    return specs
