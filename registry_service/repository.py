"""The registry's PostgreSQL data access: learnwares, specifications, change feed, check jobs,
uploads and tokens.

Every statement is parameterised. Each write that changes a learnware runs in one transaction
that also appends one `change_events` row (the transactional outbox) and so wakes watchers on
the `lwdock_changes` channel at commit. Appends are serialised by a transaction-scoped advisory
lock taken just before the insert, so events become visible in sequence order: a reader that
has seen sequence N never later finds a smaller one.

Errors are `lwdock.errors`: NotFound for unknown ids, AlreadyExists for a package registered
twice or a request_id reused for another package, Aborted for a stale etag, a lost job lease or
a serialisation failure, FailedPrecondition for an update while a check runs, Unavailable when
PostgreSQL cannot be reached.

Lock order, to keep transactions free of deadlocks: a learnware row before its check jobs, the
outbox lock last. `claim_check_job` locks a job first but only ever SKIP-LOCKs the learnware.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lwdock.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LwdockError,
    NotFound,
    PreconditionViolation,
    Unavailable,
)

# pg_advisory_xact_lock key that serialises outbox appends ("lwdock-o" in ASCII).
OUTBOX_LOCK_KEY = 0x6C77646F636B2D6F
CHANGES_CHANNEL = "lwdock_changes"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A check log keeps its last this many characters (Beimingwu kept 30,000).
CHECK_LOG_LIMIT = 100_000

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LEARNWARE_ID = re.compile(r"^lw-[0-9]{8,}$")
_TOKEN_ID = re.compile(r"^tk-[0-9]{8,}$")

Row = dict[str, Any]
T = TypeVar("T")


class State(StrEnum):
    PENDING = "PENDING"
    CHECKING = "CHECKING"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    DELETED = "DELETED"


class ChangeType(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    STATE_CHANGED = "STATE_CHANGED"
    DELETED = "DELETED"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Role(StrEnum):
    READER = "READER"
    DEVELOPER = "DEVELOPER"
    ADMIN = "ADMIN"


class UploadKind(StrEnum):
    CREATE = "CREATE"
    REPLACE = "REPLACE"


class Order(StrEnum):
    """Orders of `list_learnwares` (the values are ListLearnwaresRequest.order_by strings)."""

    CREATE_TIME_DESC = "create_time desc"
    CREATE_TIME = "create_time"
    NAME = "name"
    NAME_DESC = "name desc"

    @classmethod
    def parse(cls, order_by: str) -> Order:
        """AIP-132 `order_by`: "" -> create_time desc; "create_time asc" == "create_time"."""
        words = order_by.lower().split()
        if not words:
            return cls.CREATE_TIME_DESC
        if len(words) == 2 and words[1] == "asc":
            words = words[:1]
        try:
            return cls(" ".join(words))
        except ValueError:
            raise InvalidArgument.for_field(
                "order_by", f"unsupported order {order_by!r}; use one of {[o.value for o in cls]}"
            ) from None


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class PackageInfo:
    sha256: str
    size_bytes: int
    content_type: str = "application/zip"


@dataclass(frozen=True)
class NewSpecification:
    """A statistical specification to store with a package (spec_json: text or a JSON object)."""

    name: str
    type: str
    spec_json: str | Mapping[str, Any]
    dimension: int | None = None
    # File inside the package; defaults to `name`.
    file_name: str = ""


@dataclass(frozen=True)
class SpecificationRow:
    learnware_id: str
    package_sha256: str
    name: str
    file_name: str
    type: str
    dimension: int | None
    # The JSON text; None in summaries (lists, learnware rows, snapshots).
    spec_json: str | None = None
    create_time: datetime | None = None

    @property
    def resource_name(self) -> str:
        return f"learnwares/{self.learnware_id}/specifications/{self.name}"

    def data(self) -> Any:
        if self.spec_json is None:
            raise ValueError("specification summary carries no JSON")
        return json.loads(self.spec_json)


@dataclass(frozen=True)
class LearnwareRow:
    id: str
    number: int
    owner: str
    state: State
    state_reason: str
    semantic: dict[str, Any]
    package: PackageInfo
    etag: str
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None
    # Summaries of the current package's specifications (no spec_json).
    specifications: tuple[SpecificationRow, ...] = ()

    @property
    def name(self) -> str:
        return f"learnwares/{self.id}"

    def snapshot(self) -> dict[str, Any]:
        """The JSON stored in a change event."""
        return {
            "id": self.id,
            "number": self.number,
            "owner": self.owner,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "semantic": self.semantic,
            "package": {
                "sha256": self.package.sha256,
                "size_bytes": self.package.size_bytes,
                "content_type": self.package.content_type,
            },
            "specifications": [
                {
                    "name": s.name,
                    "file_name": s.file_name,
                    "type": s.type,
                    "dimension": s.dimension,
                    "create_time": s.create_time.isoformat() if s.create_time else None,
                }
                for s in self.specifications
            ],
            "etag": self.etag,
            "create_time": self.create_time.isoformat(),
            "update_time": self.update_time.isoformat(),
            "delete_time": self.delete_time.isoformat() if self.delete_time else None,
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> LearnwareRow:
        package = snapshot["package"]
        delete_time = snapshot.get("delete_time")
        return cls(
            id=snapshot["id"],
            number=int(snapshot["number"]),
            owner=snapshot["owner"],
            state=State(snapshot["state"]),
            state_reason=snapshot["state_reason"],
            semantic=dict(snapshot["semantic"]),
            package=PackageInfo(
                package["sha256"], int(package["size_bytes"]), package["content_type"]
            ),
            etag=snapshot["etag"],
            create_time=datetime.fromisoformat(snapshot["create_time"]),
            update_time=datetime.fromisoformat(snapshot["update_time"]),
            delete_time=datetime.fromisoformat(delete_time) if delete_time else None,
            specifications=tuple(
                SpecificationRow(
                    learnware_id=snapshot["id"],
                    package_sha256=package["sha256"],
                    name=s["name"],
                    file_name=s["file_name"],
                    type=s["type"],
                    dimension=s["dimension"],
                    create_time=(
                        datetime.fromisoformat(s["create_time"]) if s.get("create_time") else None
                    ),
                )
                for s in snapshot.get("specifications", ())
            ),
        )


@dataclass(frozen=True)
class ChangeEventRow:
    sequence: int
    type: ChangeType
    learnware_id: str
    snapshot: dict[str, Any]
    time: datetime
    # With `with_specifications=True`: the snapshot's package's specifications, JSON included.
    specifications: tuple[SpecificationRow, ...] = ()

    def learnware(self) -> LearnwareRow:
        return LearnwareRow.from_snapshot(self.snapshot)


@dataclass(frozen=True)
class CheckJobRow:
    id: int
    learnware_id: str
    package_sha256: str
    state: JobState
    attempts: int
    max_attempts: int
    not_before: datetime
    locked_by: str | None
    locked_until: datetime | None
    last_error: str
    passed: bool | None
    reason: str
    log: str
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None


@dataclass(frozen=True)
class UploadRow:
    request_id: str
    learnware_id: str
    kind: UploadKind
    sha256: str
    size_bytes: int
    create_time: datetime


@dataclass(frozen=True)
class TokenRow:
    id: str
    principal: str
    role: Role
    token_sha256: str
    display_name: str
    create_time: datetime
    expire_time: datetime | None
    revoked: bool
    revoke_time: datetime | None

    @property
    def name(self) -> str:
        return f"tokens/{self.id}"

    def is_active(self, now: datetime) -> bool:
        return not self.revoked and (self.expire_time is None or self.expire_time > now)


@dataclass(frozen=True)
class LearnwareFilter:
    """Conditions of `list_learnwares`, all ANDed. Semantic fields match the JSON `Values`."""

    # Empty: every state but DELETED (all states with show_deleted).
    states: frozenset[State] = frozenset()
    owner: str | None = None
    data_type: str | None = None
    task: str | None = None
    library: str | None = None
    license: str | None = None
    # Every listed scenario must be present.
    scenarios: tuple[str, ...] = ()
    # Case-insensitive substring of the semantic Name.
    name_contains: str | None = None
    ids: tuple[str, ...] = ()
    show_deleted: bool = False

    def fingerprint(self) -> str:
        parts = [
            sorted(s.value for s in self.states),
            self.owner,
            self.data_type,
            self.task,
            self.library,
            self.license,
            sorted(self.scenarios),
            self.name_contains,
            sorted(self.ids),
            self.show_deleted,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Empty exactly at the end.
    next_page_token: str
    total_size: int = 0


# ---------------------------------------------------------------------------------------------
# SQL

_LW_COLUMNS = (
    "id, number, owner, state, state_reason, semantic, package_sha256, package_size, "
    "package_content_type, etag, create_time, update_time, delete_time"
)
_JOB_COLUMNS = (
    "id, learnware_id, package_sha256, state, attempts, max_attempts, not_before, locked_by, "
    "locked_until, last_error, passed, reason, log, create_time, update_time, start_time, end_time"
)
_TOKEN_COLUMNS = (
    "id, principal, role, token_sha256, display_name, create_time, expire_time, revoked, "
    "revoke_time"
)

# Sort key expression and direction of each order; `number` breaks ties the same way.
_ORDERS: dict[Order, tuple[str, str]] = {
    Order.CREATE_TIME_DESC: ("create_time", "DESC"),
    Order.CREATE_TIME: ("create_time", "ASC"),
    Order.NAME: ("display_name", "ASC"),
    Order.NAME_DESC: ("display_name", "DESC"),
}


def _learnware(row: Row, specs: Sequence[SpecificationRow] = ()) -> LearnwareRow:
    return LearnwareRow(
        id=row["id"],
        number=row["number"],
        owner=row["owner"],
        state=State(row["state"]),
        state_reason=row["state_reason"],
        semantic=row["semantic"],
        package=PackageInfo(
            row["package_sha256"], row["package_size"], row["package_content_type"]
        ),
        etag=row["etag"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        delete_time=row["delete_time"],
        specifications=tuple(specs),
    )


def _spec(row: Row) -> SpecificationRow:
    return SpecificationRow(
        learnware_id=row["learnware_id"],
        package_sha256=row["package_sha256"],
        name=row["name"],
        file_name=row["file_name"],
        type=row["type"],
        dimension=row["dimension"],
        spec_json=row.get("spec_json"),
        create_time=row["create_time"],
    )


def _job(row: Row) -> CheckJobRow:
    return CheckJobRow(**{**row, "state": JobState(row["state"])})


def _upload(row: Row) -> UploadRow:
    return UploadRow(**{**row, "kind": UploadKind(row["kind"])})


def _token(row: Row) -> TokenRow:
    return TokenRow(**{**row, "role": Role(row["role"])})


async def _one(conn: AsyncConnection[Any], query: str, params: Sequence[Any] = ()) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchone()


async def _all(conn: AsyncConnection[Any], query: str, params: Sequence[Any] = ()) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


def _check_sha256(value: str, field_path: str) -> None:
    if not _SHA256.match(value):
        raise InvalidArgument.for_field(field_path, "must be 64 lowercase hex digits (sha256)")


def _learnware_not_found(learnware_id: str) -> NotFound:
    return NotFound("Learnware", f"learnwares/{learnware_id}")


def _encode_token(payload: Mapping[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != 1:
            raise ValueError("unknown page token version")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field("page_token", "not a page token of this list") from None
    if payload.get("f") != fingerprint:
        raise InvalidArgument.for_field(
            "page_token", "the page token belongs to a list with another filter or order"
        )
    return payload


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class _Busy(Exception):
    """A claimed job's learnware is locked by another transaction: roll back, try another."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)
        self.job_id = job_id


# ---------------------------------------------------------------------------------------------


class Repository:
    """Async data access over a psycopg pool whose connections are in autocommit mode."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, connect_timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout_s = connect_timeout_s

    # -- connections and error mapping ---------------------------------------------------------

    @staticmethod
    def _map_error(exc: psycopg.Error) -> LwdockError | None:
        if isinstance(exc, psycopg.errors.TransactionRollback):
            return Aborted(f"concurrent modification, retry ({exc.sqlstate})")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return DeadlineExceeded("a database statement was cancelled or timed out")
        if isinstance(exc, psycopg.OperationalError):
            return Unavailable("the registry database is unavailable")
        if isinstance(exc, psycopg.DataError):
            detail = exc.diag.message_primary or str(exc)
            return InvalidArgument(f"value rejected by the database: {detail}")
        return None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        try:
            async with self._pool.connection(timeout=self._timeout_s) as conn:
                yield conn
        except psycopg.Error as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    # -- shared pieces ---------------------------------------------------------------------------

    @staticmethod
    async def _current_specs(
        conn: AsyncConnection[Any], ids: Sequence[str]
    ) -> dict[str, list[SpecificationRow]]:
        rows = await _all(
            conn,
            "SELECT s.learnware_id, s.package_sha256, s.name, s.file_name, s.type, s.dimension, "
            "s.create_time FROM specifications s JOIN learnwares l "
            "ON l.id = s.learnware_id AND l.package_sha256 = s.package_sha256 "
            "WHERE s.learnware_id = ANY(%s) ORDER BY s.learnware_id, s.name",
            (list(ids),),
        )
        found: dict[str, list[SpecificationRow]] = {}
        for row in rows:
            found.setdefault(row["learnware_id"], []).append(_spec(row))
        return found

    async def _with_specs(
        self, conn: AsyncConnection[Any], rows: Sequence[Row]
    ) -> list[LearnwareRow]:
        specs = await self._current_specs(conn, [r["id"] for r in rows])
        return [_learnware(r, specs.get(r["id"], ())) for r in rows]

    async def _lock_learnware(
        self, conn: AsyncConnection[Any], learnware_id: str, *, allow_deleted: bool = False
    ) -> Row:
        if not _LEARNWARE_ID.match(learnware_id):
            raise _learnware_not_found(learnware_id)
        row = await _one(
            conn, f"SELECT {_LW_COLUMNS} FROM learnwares WHERE id = %s FOR UPDATE", (learnware_id,)
        )
        if row is None or (row["state"] == State.DELETED and not allow_deleted):
            raise _learnware_not_found(learnware_id)
        return row

    @staticmethod
    def _check_etag(row: Row, expected_etag: str | None) -> None:
        if expected_etag and expected_etag != row["etag"]:
            raise Aborted(
                f"learnwares/{row['id']} changed since it was read (stale etag); re-read it",
                reason="ETAG_MISMATCH",
                metadata={"learnware": f"learnwares/{row['id']}"},
            )

    @staticmethod
    def _refuse_while_checking(row: Row) -> None:
        if row["state"] == State.CHECKING:
            raise FailedPrecondition(
                f"learnwares/{row['id']} is being checked; retry when the check has finished",
                [
                    PreconditionViolation(
                        "STATE", f"learnwares/{row['id']}", "the learnware is in state CHECKING"
                    )
                ],
                reason="LEARNWARE_CHECKING",
            )

    async def _append_event(
        self, conn: AsyncConnection[Any], change: ChangeType, learnware: LearnwareRow
    ) -> int:
        # Held to commit: appends commit in sequence order. Always the last lock taken.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
        row = await _one(
            conn,
            "INSERT INTO change_events (learnware_id, type, snapshot) VALUES (%s, %s, %s) "
            "RETURNING sequence",
            (learnware.id, change.value, Jsonb(learnware.snapshot())),
        )
        assert row is not None
        return int(row["sequence"])

    async def _update_learnware(
        self,
        conn: AsyncConnection[Any],
        learnware_id: str,
        assignments: str,
        params: Sequence[Any],
        change: ChangeType,
    ) -> LearnwareRow:
        """UPDATE with a new etag and update_time, then append the event; returns the row."""
        row = await _one(
            conn,
            f"UPDATE learnwares SET {assignments}, etag = gen_random_uuid()::text, "
            f"update_time = now() WHERE id = %s RETURNING {_LW_COLUMNS}",
            (*params, learnware_id),
        )
        assert row is not None
        (learnware,) = await self._with_specs(conn, [row])
        await self._append_event(conn, change, learnware)
        return learnware

    async def _package_taken(self, conn: AsyncConnection[Any], sha256: str) -> AlreadyExists | None:
        row = await _one(
            conn,
            "SELECT id FROM learnwares WHERE package_sha256 = %s AND state <> 'DELETED'",
            (sha256,),
        )
        if row is None:
            return None
        return AlreadyExists(
            "Learnware",
            f"learnwares/{row['id']}",
            f"a package with sha256 {sha256} is already registered as learnwares/{row['id']}",
        )

    @staticmethod
    async def _insert_specs(
        conn: AsyncConnection[Any],
        learnware_id: str,
        sha256: str,
        specifications: Sequence[NewSpecification],
    ) -> None:
        if not specifications:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO specifications (learnware_id, package_sha256, name, file_name, type, "
                "dimension, spec_json) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (learnware_id, package_sha256, name) DO UPDATE SET "
                "file_name = EXCLUDED.file_name, type = EXCLUDED.type, "
                "dimension = EXCLUDED.dimension, spec_json = EXCLUDED.spec_json",
                [
                    (
                        learnware_id,
                        sha256,
                        s.name,
                        s.file_name or s.name,
                        s.type,
                        s.dimension,
                        s.spec_json if isinstance(s.spec_json, str) else json.dumps(s.spec_json),
                    )
                    for s in specifications
                ],
            )

    @staticmethod
    async def _enqueue_check(
        conn: AsyncConnection[Any], learnware_id: str, sha256: str, max_attempts: int
    ) -> None:
        # A newer package or semantic supersedes any check not yet started.
        await conn.execute(
            "UPDATE check_jobs SET state = 'CANCELLED', update_time = now(), "
            "last_error = 'superseded' WHERE learnware_id = %s AND state = 'QUEUED'",
            (learnware_id,),
        )
        await conn.execute(
            "INSERT INTO check_jobs (learnware_id, package_sha256, max_attempts) "
            "VALUES (%s, %s, %s)",
            (learnware_id, sha256, max_attempts),
        )

    @staticmethod
    def _validate_new_package(
        package: PackageInfo, specifications: Sequence[NewSpecification]
    ) -> None:
        _check_sha256(package.sha256, "sha256")
        if package.size_bytes < 0:
            raise InvalidArgument.for_field("size_bytes", "must not be negative")
        seen: set[str] = set()
        for spec in specifications:
            if not spec.name or spec.name in seen:
                raise InvalidArgument.for_field(
                    "specifications", f"specification names must be unique and non-empty: {spec}"
                )
            seen.add(spec.name)

    async def _find_upload(self, conn: AsyncConnection[Any], request_id: str) -> UploadRow | None:
        row = await _one(
            conn,
            "SELECT request_id, learnware_id, kind, sha256, size_bytes, create_time "
            "FROM uploads WHERE request_id = %s",
            (request_id,),
        )
        return _upload(row) if row else None

    async def _after_lost_race(
        self,
        conn: AsyncConnection[Any],
        exc: psycopg.errors.UniqueViolation | AlreadyExists,
        request_id: str,
        kind: UploadKind,
        sha256: str,
    ) -> LearnwareRow:
        """An upload lost a race (its transaction has rolled back). With a request_id, the
        winner may have been this very request, retried: answer as it did. Otherwise the
        package (or the id) is taken: ALREADY_EXISTS naming who holds it."""
        if request_id:
            upload = await self._find_upload(conn, request_id)
            if upload is not None:
                return await self._replay(conn, upload, kind, sha256)
        if isinstance(exc, AlreadyExists):
            raise exc
        if exc.diag.constraint_name == "learnwares_live_package_key":
            taken = await self._package_taken(conn, sha256)
            raise (taken or AlreadyExists("Learnware", sha256)) from exc
        raise exc

    async def _replay(
        self, conn: AsyncConnection[Any], upload: UploadRow, kind: UploadKind, sha256: str
    ) -> LearnwareRow:
        """The first result of a retried request, or AlreadyExists if it differs."""
        if upload.kind != kind or upload.sha256 != sha256:
            raise AlreadyExists(
                "Upload",
                upload.request_id,
                f"request_id {upload.request_id!r} was already used for another request",
            )
        row = await _one(
            conn, f"SELECT {_LW_COLUMNS} FROM learnwares WHERE id = %s", (upload.learnware_id,)
        )
        assert row is not None  # uploads.learnware_id references learnwares
        (learnware,) = await self._with_specs(conn, [row])
        return learnware

    # -- learnwares ------------------------------------------------------------------------------

    async def create_learnware(
        self,
        *,
        owner: str,
        semantic: Mapping[str, Any],
        package: PackageInfo,
        specifications: Sequence[NewSpecification] = (),
        request_id: str | None = None,
        max_check_attempts: int = 3,
    ) -> LearnwareRow:
        """Register a staged, validated package: in ONE transaction the learnware (PENDING, id
        from the sequence), its specifications, a queued check job, the upload record and a
        CREATED event. A retry with the same request_id and package returns the first result.
        """
        self._validate_new_package(package, specifications)
        async with self._conn() as conn:
            if request_id:
                upload = await self._find_upload(conn, request_id)
                if upload is not None:
                    return await self._replay(conn, upload, UploadKind.CREATE, package.sha256)
            try:
                async with conn.transaction():
                    taken = await self._package_taken(conn, package.sha256)
                    if taken is not None:
                        raise taken
                    row = await _one(
                        conn,
                        "INSERT INTO learnwares (id, number, owner, semantic, package_sha256, "
                        "package_size, package_content_type) "
                        "SELECT 'lw-' || lpad(n::text, greatest(8, length(n::text)), '0'), n, "
                        "%s, %s, %s, %s, %s "
                        "FROM (SELECT nextval('learnware_number_seq') AS n) AS seq "
                        f"RETURNING {_LW_COLUMNS}",
                        (
                            owner,
                            Jsonb(dict(semantic)),
                            package.sha256,
                            package.size_bytes,
                            package.content_type,
                        ),
                    )
                    assert row is not None
                    learnware_id = row["id"]
                    await self._insert_specs(conn, learnware_id, package.sha256, specifications)
                    await self._enqueue_check(
                        conn, learnware_id, package.sha256, max_check_attempts
                    )
                    if request_id:
                        await conn.execute(
                            "INSERT INTO uploads (request_id, learnware_id, kind, sha256, "
                            "size_bytes) VALUES (%s, %s, 'CREATE', %s, %s)",
                            (request_id, learnware_id, package.sha256, package.size_bytes),
                        )
                    (learnware,) = await self._with_specs(conn, [row])
                    await self._append_event(conn, ChangeType.CREATED, learnware)
                    return learnware
            except (psycopg.errors.UniqueViolation, AlreadyExists) as exc:
                return await self._after_lost_race(
                    conn, exc, request_id, UploadKind.CREATE, package.sha256
                )

    async def get_learnware(
        self, learnware_id: str, *, include_deleted: bool = False
    ) -> LearnwareRow:
        if not _LEARNWARE_ID.match(learnware_id):
            raise _learnware_not_found(learnware_id)
        async with self._conn() as conn:
            row = await _one(
                conn, f"SELECT {_LW_COLUMNS} FROM learnwares WHERE id = %s", (learnware_id,)
            )
            if row is None or (row["state"] == State.DELETED and not include_deleted):
                raise _learnware_not_found(learnware_id)
            (learnware,) = await self._with_specs(conn, [row])
            return learnware

    async def list_learnwares(
        self,
        filter: LearnwareFilter | None = None,
        *,
        order: Order = Order.CREATE_TIME_DESC,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[LearnwareRow]:
        """One page in `order`, keyset-paginated (stable under concurrent inserts: no row is
        repeated or skipped), with the total number of matching rows."""
        flt = filter or LearnwareFilter()
        size = _page_size(page_size)
        fingerprint = f"{flt.fingerprint()}:{order.value}"
        key_column, direction = _ORDERS[order]

        clauses: list[str] = []
        params: list[Any] = []
        if flt.states:
            clauses.append("state = ANY(%s)")
            params.append(sorted(s.value for s in flt.states))
        elif not flt.show_deleted:
            clauses.append("state <> 'DELETED'")
        if flt.owner is not None:
            clauses.append("owner = %s")
            params.append(flt.owner)
        contained: dict[str, Any] = {}
        for key, value in (
            ("Data", flt.data_type),
            ("Task", flt.task),
            ("Library", flt.library),
            ("License", flt.license),
        ):
            if value is not None:
                contained[key] = {"Values": [value]}
        if flt.scenarios:
            contained["Scenario"] = {"Values": list(flt.scenarios)}
        if contained:
            clauses.append("semantic @> %s")
            params.append(Jsonb(contained))
        if flt.name_contains:
            escaped = re.sub(r"([\\%_])", r"\\\1", flt.name_contains)
            clauses.append("display_name ILIKE %s")
            params.append(f"%{escaped}%")
        if flt.ids:
            clauses.append("id = ANY(%s)")
            params.append(list(flt.ids))
        where = " AND ".join(clauses) or "TRUE"

        page_clause = ""
        page_params: list[Any] = []
        if page_token:
            payload = _decode_token(page_token, fingerprint)
            try:
                number = int(payload["n"])
                key: Any = payload["k"]
                if key_column == "create_time":
                    key = datetime.fromisoformat(key)
                elif not isinstance(key, str):
                    raise ValueError(key)
            except (KeyError, TypeError, ValueError):
                raise InvalidArgument.for_field("page_token", "malformed page token") from None
            comparison = "<" if direction == "DESC" else ">"
            page_clause = f" AND ({key_column}, number) {comparison} (%s, %s)"
            page_params = [key, number]

        async with self._conn() as conn, conn.transaction():
            # One snapshot for the page and the count.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await _all(
                conn,
                f"SELECT {_LW_COLUMNS}, display_name FROM learnwares "
                f"WHERE {where}{page_clause} "
                f"ORDER BY {key_column} {direction}, number {direction} LIMIT %s",
                (*params, *page_params, size + 1),
            )
            count = await _one(conn, f"SELECT count(*) AS n FROM learnwares WHERE {where}", params)
            items = await self._with_specs(conn, rows[:size])
        next_token = ""
        if len(rows) > size:
            last = rows[size - 1]
            last_key = last[key_column]
            next_token = _encode_token(
                {
                    "v": 1,
                    "f": fingerprint,
                    "k": last_key.isoformat() if isinstance(last_key, datetime) else last_key,
                    "n": last["number"],
                }
            )
        return Page(items, next_token, int(count["n"]) if count else 0)

    async def update_semantic(
        self,
        learnware_id: str,
        semantic: Mapping[str, Any],
        *,
        expected_etag: str | None = None,
        recheck: bool = False,
        max_check_attempts: int = 3,
    ) -> LearnwareRow:
        """Replace the semantic specification (the caller merges field masks) and append an
        UPDATED event. `recheck` (Data/Task/Input/Output changed): back to PENDING with a new
        check job. Aborted on a stale etag; FailedPrecondition while CHECKING."""
        async with self._conn() as conn, conn.transaction():
            row = await self._lock_learnware(conn, learnware_id)
            self._check_etag(row, expected_etag)
            self._refuse_while_checking(row)
            if recheck:
                await self._enqueue_check(
                    conn, learnware_id, row["package_sha256"], max_check_attempts
                )
                return await self._update_learnware(
                    conn,
                    learnware_id,
                    "semantic = %s, state = 'PENDING', state_reason = ''",
                    (Jsonb(dict(semantic)),),
                    ChangeType.UPDATED,
                )
            return await self._update_learnware(
                conn, learnware_id, "semantic = %s", (Jsonb(dict(semantic)),), ChangeType.UPDATED
            )

    async def replace_package(
        self,
        learnware_id: str,
        package: PackageInfo,
        specifications: Sequence[NewSpecification] = (),
        *,
        expected_etag: str | None = None,
        request_id: str | None = None,
        max_check_attempts: int = 3,
    ) -> LearnwareRow:
        """Point the learnware at a new staged package and its specifications: PENDING, a new
        check job, an UPDATED event, one transaction. Old package blobs become orphans."""
        self._validate_new_package(package, specifications)
        async with self._conn() as conn:
            if request_id:
                upload = await self._find_upload(conn, request_id)
                if upload is not None:
                    return await self._replay(conn, upload, UploadKind.REPLACE, package.sha256)
            try:
                async with conn.transaction():
                    row = await self._lock_learnware(conn, learnware_id)
                    self._check_etag(row, expected_etag)
                    self._refuse_while_checking(row)
                    if package.sha256 != row["package_sha256"]:
                        taken = await self._package_taken(conn, package.sha256)
                        if taken is not None:
                            raise taken
                    await self._insert_specs(conn, learnware_id, package.sha256, specifications)
                    await self._enqueue_check(
                        conn, learnware_id, package.sha256, max_check_attempts
                    )
                    if request_id:
                        await conn.execute(
                            "INSERT INTO uploads (request_id, learnware_id, kind, sha256, "
                            "size_bytes) VALUES (%s, %s, 'REPLACE', %s, %s)",
                            (request_id, learnware_id, package.sha256, package.size_bytes),
                        )
                    return await self._update_learnware(
                        conn,
                        learnware_id,
                        "package_sha256 = %s, package_size = %s, package_content_type = %s, "
                        "state = 'PENDING', state_reason = ''",
                        (package.sha256, package.size_bytes, package.content_type),
                        ChangeType.UPDATED,
                    )
            except (psycopg.errors.UniqueViolation, AlreadyExists) as exc:
                return await self._after_lost_race(
                    conn, exc, request_id, UploadKind.REPLACE, package.sha256
                )

    async def set_state(
        self,
        learnware_id: str,
        state: State,
        reason: str = "",
        *,
        expected_etag: str | None = None,
        from_states: frozenset[State] | None = None,
    ) -> LearnwareRow:
        """Move to `state` (not DELETED: use delete_learnware) with a STATE_CHANGED event. A
        call that changes nothing returns the row without an event. FailedPrecondition when
        the current state is not in `from_states`."""
        if state == State.DELETED:
            raise InvalidArgument.for_field("state", "use delete_learnware to delete")
        async with self._conn() as conn, conn.transaction():
            row = await self._lock_learnware(conn, learnware_id)
            self._check_etag(row, expected_etag)
            current = State(row["state"])
            if from_states is not None and current not in from_states:
                raise FailedPrecondition(
                    f"learnwares/{learnware_id} is {current.value}",
                    [
                        PreconditionViolation(
                            "STATE",
                            f"learnwares/{learnware_id}",
                            f"state is {current.value}, expected one of "
                            f"{sorted(s.value for s in from_states)}",
                        )
                    ],
                )
            if current == state and row["state_reason"] == reason:
                (learnware,) = await self._with_specs(conn, [row])
                return learnware
            return await self._update_learnware(
                conn,
                learnware_id,
                "state = %s, state_reason = %s",
                (state.value, reason),
                ChangeType.STATE_CHANGED,
            )

    async def delete_learnware(
        self, learnware_id: str, *, expected_etag: str | None = None
    ) -> LearnwareRow:
        """Soft delete: state DELETED, pending checks cancelled, a DELETED event. The id stays
        reserved forever; the package may be registered again under a new id."""
        async with self._conn() as conn, conn.transaction():
            row = await self._lock_learnware(conn, learnware_id)
            self._check_etag(row, expected_etag)
            await conn.execute(
                "UPDATE check_jobs SET state = 'CANCELLED', update_time = now(), "
                "last_error = 'learnware deleted', locked_until = NULL "
                "WHERE learnware_id = %s AND state IN ('QUEUED', 'RUNNING')",
                (learnware_id,),
            )
            return await self._update_learnware(
                conn,
                learnware_id,
                "state = 'DELETED', delete_time = now()",
                (),
                ChangeType.DELETED,
            )

    # -- specifications --------------------------------------------------------------------------

    async def get_specifications(self, learnware_id: str) -> list[SpecificationRow]:
        """The current package's specifications, JSON included."""
        if not _LEARNWARE_ID.match(learnware_id):
            raise _learnware_not_found(learnware_id)
        async with self._conn() as conn:
            rows = await _all(
                conn,
                "SELECT l.state, s.learnware_id, s.package_sha256, s.name, s.file_name, s.type, "
                "s.dimension, s.spec_json, s.create_time FROM learnwares l "
                "LEFT JOIN specifications s "
                "ON s.learnware_id = l.id AND s.package_sha256 = l.package_sha256 "
                "WHERE l.id = %s ORDER BY s.name",
                (learnware_id,),
            )
        if not rows or rows[0]["state"] == State.DELETED:
            raise _learnware_not_found(learnware_id)
        return [_spec(r) for r in rows if r["name"] is not None]

    async def get_specification(self, learnware_id: str, name: str) -> SpecificationRow:
        for spec in await self.get_specifications(learnware_id):
            if spec.name == name:
                return spec
        raise NotFound("Specification", f"learnwares/{learnware_id}/specifications/{name}")

    # -- change feed -----------------------------------------------------------------------------

    @staticmethod
    async def _events(
        conn: AsyncConnection[Any], since: int, limit: int, with_specifications: bool
    ) -> list[ChangeEventRow]:
        rows = await _all(
            conn,
            "SELECT sequence, type, learnware_id, snapshot, event_time FROM change_events "
            "WHERE sequence > %s ORDER BY sequence LIMIT %s",
            (since, limit),
        )
        specs: dict[tuple[str, str], list[SpecificationRow]] = {}
        if with_specifications and rows:
            keys = {(r["learnware_id"], r["snapshot"]["package"]["sha256"]) for r in rows}
            spec_rows = await _all(
                conn,
                "SELECT learnware_id, package_sha256, name, file_name, type, dimension, "
                "spec_json, create_time FROM specifications "
                "WHERE (learnware_id, package_sha256) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[])) ORDER BY name",
                ([k[0] for k in keys], [k[1] for k in keys]),
            )
            for spec_row in spec_rows:
                key = (spec_row["learnware_id"], spec_row["package_sha256"])
                specs.setdefault(key, []).append(_spec(spec_row))
        return [
            ChangeEventRow(
                sequence=r["sequence"],
                type=ChangeType(r["type"]),
                learnware_id=r["learnware_id"],
                snapshot=r["snapshot"],
                time=r["event_time"],
                specifications=tuple(
                    specs.get((r["learnware_id"], r["snapshot"]["package"]["sha256"]), ())
                ),
            )
            for r in rows
        ]

    async def events_since(
        self, sequence: int, limit: int = 100, *, with_specifications: bool = False
    ) -> list[ChangeEventRow]:
        """Events with sequence > `sequence`, oldest first, at most `limit`. Sequences increase
        strictly (gaps are possible: rolled-back appends) and commit in order."""
        if limit <= 0:
            raise InvalidArgument.for_field("limit", "must be positive")
        async with self._conn() as conn:
            return await self._events(conn, sequence, limit, with_specifications)

    async def latest_sequence(self) -> int:
        async with self._conn() as conn:
            row = await _one(conn, "SELECT coalesce(max(sequence), 0) AS s FROM change_events")
            return int(row["s"]) if row else 0

    async def watch(
        self,
        since: int = 0,
        *,
        batch_size: int = 100,
        poll_interval_s: float = 5.0,
        with_specifications: bool = False,
        mark_caught_up: bool = False,
    ) -> AsyncIterator[ChangeEventRow | None]:
        """Every event after `since`, then each new one as it commits (LISTEN on
        `lwdock_changes`, polling every `poll_interval_s` as a safety net), until the consumer
        stops. With `mark_caught_up`, one None follows the replay: the first time a read
        returns fewer than `batch_size` events, every event committed before that read has
        been yielded. Uses its own connection, not one of the pool's."""
        try:
            conn = await AsyncConnection.connect(
                self._pool.conninfo, **{**self._pool.kwargs, "autocommit": True}
            )
        except psycopg.Error as exc:
            raise (self._map_error(exc) or exc) from exc
        try:
            await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
            replaying = mark_caught_up
            while True:
                events = await self._events(conn, since, batch_size, with_specifications)
                for event in events:
                    yield event
                    since = event.sequence
                if len(events) == batch_size:
                    continue
                if replaying:
                    replaying = False
                    yield None
                async for _ in conn.notifies(timeout=poll_interval_s, stop_after=1):
                    pass
        except psycopg.Error as exc:
            mapped = self._map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            with suppress(psycopg.Error):
                await conn.close()

    # -- uploads ---------------------------------------------------------------------------------

    async def find_upload(self, request_id: str) -> UploadRow | None:
        async with self._conn() as conn:
            return await self._find_upload(conn, request_id)

    # -- check jobs ------------------------------------------------------------------------------

    async def claim_check_job(
        self, worker: str, lease_seconds: float = 300.0, *, mark_checking: bool = True
    ) -> CheckJobRow | None:
        """Take the oldest runnable job (queued, or running with an expired lease and attempts
        left) with FOR UPDATE SKIP LOCKED, so concurrent workers never get the same one. The
        learnware moves PENDING -> CHECKING (STATE_CHANGED) when `mark_checking`. Jobs whose
        learnware was deleted or re-uploaded meanwhile are cancelled on the way."""
        skip: list[int] = []
        async with self._conn() as conn:
            for _ in range(50):
                try:
                    async with conn.transaction():
                        job = await _one(
                            conn,
                            f"SELECT {_JOB_COLUMNS} FROM check_jobs WHERE state = 'QUEUED' "
                            "AND not_before <= now() AND NOT (id = ANY(%s)) "
                            "ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                            (skip,),
                        ) or await _one(
                            conn,
                            f"SELECT {_JOB_COLUMNS} FROM check_jobs WHERE state = 'RUNNING' "
                            "AND locked_until < now() AND attempts < max_attempts "
                            "AND NOT (id = ANY(%s)) "
                            "ORDER BY locked_until, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                            (skip,),
                        )
                        if job is None:
                            return None
                        learnware = await _one(
                            conn,
                            f"SELECT {_LW_COLUMNS} FROM learnwares WHERE id = %s "
                            "FOR UPDATE SKIP LOCKED",
                            (job["learnware_id"],),
                        )
                        if learnware is None:
                            raise _Busy(job["id"])
                        if learnware["package_sha256"] != job["package_sha256"] or learnware[
                            "state"
                        ] not in (State.PENDING, State.CHECKING):
                            await conn.execute(
                                "UPDATE check_jobs SET state = 'CANCELLED', update_time = now(), "
                                "locked_until = NULL, last_error = 'stale' WHERE id = %s",
                                (job["id"],),
                            )
                            continue
                        claimed = await _one(
                            conn,
                            "UPDATE check_jobs SET state = 'RUNNING', attempts = attempts + 1, "
                            "locked_by = %s, locked_until = now() + make_interval(secs => %s), "
                            "start_time = now(), end_time = NULL, update_time = now() "
                            f"WHERE id = %s RETURNING {_JOB_COLUMNS}",
                            (worker, float(lease_seconds), job["id"]),
                        )
                        assert claimed is not None
                        if mark_checking and learnware["state"] == State.PENDING:
                            await self._update_learnware(
                                conn,
                                learnware["id"],
                                "state = 'CHECKING', state_reason = ''",
                                (),
                                ChangeType.STATE_CHANGED,
                            )
                        return _job(claimed)
                except _Busy as busy:
                    skip.append(busy.job_id)
        return None

    async def _lock_job(
        self, conn: AsyncConnection[Any], job_id: int
    ) -> tuple[Row, Row]:  # (learnware, job), locked in that order
        head = await _one(conn, "SELECT learnware_id FROM check_jobs WHERE id = %s", (job_id,))
        if head is None:
            raise NotFound("CheckJob", str(job_id))
        learnware = await _one(
            conn,
            f"SELECT {_LW_COLUMNS} FROM learnwares WHERE id = %s FOR UPDATE",
            (head["learnware_id"],),
        )
        job = await _one(
            conn, f"SELECT {_JOB_COLUMNS} FROM check_jobs WHERE id = %s FOR UPDATE", (job_id,)
        )
        assert learnware is not None and job is not None
        return learnware, job

    @staticmethod
    def _check_lease(job: Row, worker: str) -> None:
        if job["state"] != JobState.RUNNING or job["locked_by"] != worker:
            raise Aborted(
                f"check job {job['id']} is no longer held by {worker!r} "
                f"(state {job['state']}, held by {job['locked_by']!r})",
                reason="LEASE_LOST",
            )

    @staticmethod
    async def _is_current(conn: AsyncConnection[Any], learnware: Row, job: Row) -> bool:
        """Whether the job's result decides the learnware's state."""
        if learnware["package_sha256"] != job["package_sha256"]:
            return False
        if learnware["state"] not in (State.PENDING, State.CHECKING):
            return False
        newer = await _one(
            conn,
            "SELECT 1 AS x FROM check_jobs WHERE learnware_id = %s AND id > %s "
            "AND state IN ('QUEUED', 'RUNNING')",
            (job["learnware_id"], job["id"]),
        )
        return newer is None

    async def finish_check_job(
        self, job_id: int, worker: str, *, passed: bool, reason: str = "", log: str = ""
    ) -> CheckJobRow:
        """Record a check's outcome; the learnware becomes ACTIVE or REJECTED (with `reason`)
        with a STATE_CHANGED event, unless it changed meanwhile. Aborted if the lease was lost
        (another worker reclaimed the job)."""
        async with self._conn() as conn, conn.transaction():
            learnware, job = await self._lock_job(conn, job_id)
            self._check_lease(job, worker)
            done = await _one(
                conn,
                "UPDATE check_jobs SET state = 'DONE', passed = %s, reason = %s, log = %s, "
                "locked_until = NULL, end_time = now(), update_time = now() "
                f"WHERE id = %s RETURNING {_JOB_COLUMNS}",
                (passed, reason, log[-CHECK_LOG_LIMIT:], job_id),
            )
            assert done is not None
            if await self._is_current(conn, learnware, job):
                await self._update_learnware(
                    conn,
                    learnware["id"],
                    "state = %s, state_reason = %s",
                    (State.ACTIVE.value if passed else State.REJECTED.value, reason),
                    ChangeType.STATE_CHANGED,
                )
            return _job(done)

    async def _release(
        self,
        conn: AsyncConnection[Any],
        learnware: Row,
        job: Row,
        error: str,
        retry_delay_s: float,
    ) -> CheckJobRow:
        """Give a running job back (QUEUED after a delay) or, out of attempts, fail it."""
        current = await self._is_current(conn, learnware, job)
        if job["attempts"] < job["max_attempts"]:
            row = await _one(
                conn,
                "UPDATE check_jobs SET state = 'QUEUED', last_error = %s, locked_until = NULL, "
                "not_before = now() + make_interval(secs => %s), update_time = now() "
                f"WHERE id = %s RETURNING {_JOB_COLUMNS}",
                (error, float(retry_delay_s), job["id"]),
            )
            if current and learnware["state"] == State.CHECKING:
                await self._update_learnware(
                    conn,
                    learnware["id"],
                    "state = 'PENDING', state_reason = %s",
                    ("the check will be retried",),
                    ChangeType.STATE_CHANGED,
                )
        else:
            row = await _one(
                conn,
                "UPDATE check_jobs SET state = 'FAILED', last_error = %s, locked_until = NULL, "
                f"end_time = now(), update_time = now() WHERE id = %s RETURNING {_JOB_COLUMNS}",
                (error, job["id"]),
            )
            if current:
                await self._update_learnware(
                    conn,
                    learnware["id"],
                    "state = 'REJECTED', state_reason = %s",
                    (f"the check could not run ({job['attempts']} attempts): {error}",),
                    ChangeType.STATE_CHANGED,
                )
        assert row is not None
        return _job(row)

    async def fail_check_job(
        self, job_id: int, worker: str, error: str, *, retry_delay_s: float = 30.0
    ) -> CheckJobRow:
        """The check could not run (infrastructure, not a failed check): requeue it after
        `retry_delay_s` (learnware back to PENDING) or, out of attempts, FAILED and the
        learnware REJECTED. Aborted if the lease was lost."""
        async with self._conn() as conn, conn.transaction():
            learnware, job = await self._lock_job(conn, job_id)
            self._check_lease(job, worker)
            return await self._release(conn, learnware, job, error, retry_delay_s)

    async def release_check_job(
        self, job_id: int, worker: str, *, retry_delay_s: float = 1.0, error: str = ""
    ) -> CheckJobRow:
        """Give a running job back without consuming an attempt (the checker could not be
        reached, e.g. reuse_service down or not implementing the check yet): QUEUED again
        after `retry_delay_s`, the learnware back to PENDING. Never rejects the learnware.
        Aborted if the lease was lost."""
        async with self._conn() as conn, conn.transaction():
            learnware, job = await self._lock_job(conn, job_id)
            self._check_lease(job, worker)
            current = await self._is_current(conn, learnware, job)
            row = await _one(
                conn,
                "UPDATE check_jobs SET state = 'QUEUED', attempts = GREATEST(attempts - 1, 0), "
                "last_error = %s, locked_until = NULL, "
                "not_before = now() + make_interval(secs => %s), update_time = now() "
                f"WHERE id = %s RETURNING {_JOB_COLUMNS}",
                (error, float(retry_delay_s), job_id),
            )
            if current and learnware["state"] == State.CHECKING:
                await self._update_learnware(
                    conn,
                    learnware["id"],
                    "state = 'PENDING', state_reason = %s",
                    ("waiting for the checker; the check will be retried",),
                    ChangeType.STATE_CHANGED,
                )
            assert row is not None
            return _job(row)

    async def requeue_expired_check_jobs(self, *, retry_delay_s: float = 0.0) -> int:
        """Janitor: running jobs whose lease expired go back to QUEUED (or FAILED when out of
        attempts). Returns how many were handled."""
        handled = 0
        async with self._conn() as conn:
            candidates = await _all(
                conn,
                "SELECT id FROM check_jobs WHERE state = 'RUNNING' AND locked_until < now() "
                "ORDER BY id",
            )
            for candidate in candidates:
                async with conn.transaction():
                    learnware, job = await self._lock_job(conn, candidate["id"])
                    expired = await _one(
                        conn,
                        "SELECT 1 AS x FROM check_jobs WHERE id = %s AND state = 'RUNNING' "
                        "AND locked_until < now()",
                        (job["id"],),
                    )
                    if expired is None:
                        continue
                    await self._release(
                        conn,
                        learnware,
                        job,
                        f"lease of worker {job['locked_by']!r} expired",
                        retry_delay_s,
                    )
                    handled += 1
        return handled

    async def get_check_job(self, job_id: int) -> CheckJobRow:
        async with self._conn() as conn:
            row = await _one(
                conn, f"SELECT {_JOB_COLUMNS} FROM check_jobs WHERE id = %s", (job_id,)
            )
        if row is None:
            raise NotFound("CheckJob", str(job_id))
        return _job(row)

    async def latest_check_job(
        self, learnware_id: str, *, finished_only: bool = False
    ) -> CheckJobRow | None:
        """The learnware's newest check job (finished_only: the newest DONE one, for
        GetCheckReport)."""
        async with self._conn() as conn:
            row = await _one(
                conn,
                f"SELECT {_JOB_COLUMNS} FROM check_jobs WHERE learnware_id = %s "
                "AND (NOT %s OR state = 'DONE') ORDER BY id DESC LIMIT 1",
                (learnware_id, finished_only),
            )
        return _job(row) if row else None

    async def count_check_jobs(self) -> dict[str, int]:
        """Check jobs waiting (QUEUED) and in progress (RUNNING): the check queue's depth."""
        async with self._conn() as conn:
            rows = await _all(
                conn,
                "SELECT state, count(*) AS n FROM check_jobs "
                "WHERE state IN ('QUEUED', 'RUNNING') GROUP BY state",
            )
        counts = {"QUEUED": 0, "RUNNING": 0}
        counts.update({r["state"]: int(r["n"]) for r in rows})
        return counts

    # -- blobs -----------------------------------------------------------------------------------

    async def referenced_packages(self, *, include_deleted: bool = False) -> set[str]:
        """sha256 of every package a learnware points to (for blob garbage collection)."""
        async with self._conn() as conn:
            rows = await _all(
                conn,
                "SELECT DISTINCT package_sha256 FROM learnwares WHERE %s OR state <> 'DELETED'",
                (include_deleted,),
            )
        return {r["package_sha256"] for r in rows}

    # -- tokens ----------------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        principal: str,
        role: Role,
        token_sha256: str,
        display_name: str = "",
        expire_time: datetime | None = None,
    ) -> TokenRow:
        """Store a token's hash (never the secret). AlreadyExists for a known hash."""
        _check_sha256(token_sha256, "token_sha256")
        if not principal:
            raise InvalidArgument.for_field("principal", "required")
        async with self._conn() as conn:
            try:
                row = await _one(
                    conn,
                    "INSERT INTO tokens (id, number, principal, role, token_sha256, "
                    "display_name, expire_time) "
                    "SELECT 'tk-' || lpad(n::text, greatest(8, length(n::text)), '0'), n, "
                    "%s, %s, %s, %s, %s FROM (SELECT nextval('token_number_seq') AS n) AS seq "
                    f"RETURNING {_TOKEN_COLUMNS}",
                    (principal, Role(role).value, token_sha256, display_name, expire_time),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise AlreadyExists(
                    "Token", "token_sha256", "a token with this secret already exists"
                ) from exc
        assert row is not None
        return _token(row)

    async def get_token(self, token_id: str) -> TokenRow:
        if not _TOKEN_ID.match(token_id):
            raise NotFound("Token", f"tokens/{token_id}")
        async with self._conn() as conn:
            row = await _one(
                conn, f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = %s", (token_id,)
            )
        if row is None:
            raise NotFound("Token", f"tokens/{token_id}")
        return _token(row)

    async def find_token_by_sha256(
        self, token_sha256: str, *, active_only: bool = True
    ) -> TokenRow | None:
        """The token with this hash; with active_only, None when revoked or expired."""
        async with self._conn() as conn:
            row = await _one(
                conn,
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = %s AND (NOT %s OR "
                "(NOT revoked AND (expire_time IS NULL OR expire_time > now())))",
                (token_sha256, active_only),
            )
        return _token(row) if row else None

    async def list_tokens(
        self,
        *,
        principal: str | None = None,
        include_revoked: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[TokenRow]:
        size = _page_size(page_size)
        fingerprint = hashlib.sha256(
            json.dumps(["tokens", principal, include_revoked]).encode()
        ).hexdigest()[:16]
        after = 0
        if page_token:
            try:
                after = int(_decode_token(page_token, fingerprint)["n"])
            except (KeyError, TypeError, ValueError):
                raise InvalidArgument.for_field("page_token", "malformed page token") from None
        where = "number > %s AND (%s::text IS NULL OR principal = %s) AND (%s OR NOT revoked)"
        params: list[Any] = [after, principal, principal, include_revoked]
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await _all(
                conn,
                f"SELECT {_TOKEN_COLUMNS}, number FROM tokens WHERE {where} "
                "ORDER BY number LIMIT %s",
                (*params, size + 1),
            )
            count = await _one(
                conn, f"SELECT count(*) AS n FROM tokens WHERE {where}", (0, *params[1:])
            )
        next_token = ""
        if len(rows) > size:
            next_token = _encode_token({"v": 1, "f": fingerprint, "n": rows[size - 1]["number"]})
        items = [_token({k: v for k, v in r.items() if k != "number"}) for r in rows[:size]]
        return Page(items, next_token, int(count["n"]) if count else 0)

    async def revoke_token(self, token_id: str) -> TokenRow:
        """Revoke (idempotent); the row stays for audit. NotFound for an unknown id."""
        if not _TOKEN_ID.match(token_id):
            raise NotFound("Token", f"tokens/{token_id}")
        async with self._conn() as conn:
            row = await _one(
                conn,
                "UPDATE tokens SET revoked = true, revoke_time = coalesce(revoke_time, now()) "
                f"WHERE id = %s RETURNING {_TOKEN_COLUMNS}",
                (token_id,),
            )
        if row is None:
            raise NotFound("Token", f"tokens/{token_id}")
        return _token(row)


__all__ = [
    "CHANGES_CHANNEL",
    "ChangeEventRow",
    "ChangeType",
    "CheckJobRow",
    "JobState",
    "LearnwareFilter",
    "LearnwareRow",
    "NewSpecification",
    "Order",
    "PackageInfo",
    "Page",
    "Repository",
    "Role",
    "SpecificationRow",
    "State",
    "TokenRow",
    "UploadKind",
    "UploadRow",
]
