"""Versioned SQL migrations of the registry's PostgreSQL schema.

Files `NNNN_name.sql` in this package are applied in version order by `migrate`, each in its
own transaction together with its row in `schema_migrations`. Safe when several replicas start
at once: each migration takes a transaction-scoped advisory lock, then re-checks whether it is
still unapplied, so exactly one replica applies it and the others skip it. A file whose
content changed after it was applied is refused (`MigrationError`): add a new file instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("lwdock.registry.migrations")

# pg_advisory_xact_lock key shared by every replica of the registry ("lwdock-m" in ASCII).
ADVISORY_LOCK_KEY = 0x6C77646F636B2D6D

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the files shipped with the code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped in this package, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files(__package__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


@asynccontextmanager
async def _connection(
    target: AsyncConnectionPool | AsyncConnection | str,
) -> AsyncIterator[AsyncConnection]:
    if isinstance(target, AsyncConnectionPool):
        async with target.connection() as conn:
            yield conn
    elif isinstance(target, AsyncConnection):
        yield target
    else:
        conn = await AsyncConnection.connect(target, autocommit=True)
        try:
            yield conn
        finally:
            await conn.close()


async def _applied(conn: AsyncConnection) -> dict[int, str] | None:
    """version -> checksum of what is applied; None when schema_migrations does not exist."""
    async with conn.transaction():
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or not row[0]:
            return None
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
        return {int(version): str(checksum) async for version, checksum in cur}


def _check(migration: Migration, checksum: str) -> None:
    if checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was changed after it was "
            "applied; add a new migration instead"
        )


async def migrate(
    target: AsyncConnectionPool | AsyncConnection | str,
    migrations: list[Migration] | None = None,
) -> list[int]:
    """Apply every migration not yet applied; returns the versions this call applied.

    `target` is a pool, an open connection (autocommit, or its transaction is used through
    savepoints and the locks last until it commits) or a conninfo string.
    """
    todo = load_migrations() if migrations is None else sorted(migrations, key=lambda m: m.version)
    applied_now: list[int] = []
    async with _connection(target) as conn:
        known = await _applied(conn)
        if known is not None:
            unknown = sorted(set(known) - {m.version for m in todo})
            if unknown:
                log.warning(
                    "database has migrations this code does not know (a newer version ran)",
                    extra={"versions": unknown},
                )
            for migration in todo:
                if migration.version in known:
                    _check(migration, known[migration.version])
            if all(m.version in known for m in todo):
                return applied_now
        for migration in todo:
            if known is not None and migration.version in known:
                continue
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                await conn.execute(_CREATE_TABLE)
                cur = await conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE version = %s",
                    (migration.version,),
                )
                row = await cur.fetchone()
                if row is not None:  # another replica applied it while we waited
                    _check(migration, str(row[0]))
                    continue
                log.info(
                    "applying migration",
                    extra={"version": migration.version, "migration": migration.name},
                )
                # No parameters: the file may hold many statements and literal '%' signs.
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration.version)
    return applied_now


__all__ = ["ADVISORY_LOCK_KEY", "Migration", "MigrationError", "load_migrations", "migrate"]
