"""Bearer tokens created with RegistryService.CreateToken: verified against PostgreSQL.

Only the sha256 of a token is stored (Repository.create_token); a lookup is cached for a short
TTL so a busy client does not cost a query per call, which also bounds how long a revoked
token keeps working (DeleteToken takes effect within the TTL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from lwdock.errors import Unavailable
from lwdock.server.context import Principal
from lwdock.tokens import TOKEN_PREFIX, hash_token, new_token
from registry_service.repository import Repository, Role, TokenRow

# How long a lookup (found or not) is trusted; revocation takes effect within this.
DEFAULT_TOKEN_CACHE_TTL_S = 10.0
# Entries kept at most; the cache is emptied when it grows past this.
MAX_CACHED_TOKENS = 10_000


class DatabaseTokenVerifier:
    """A `lwdock.server.interceptors.TokenVerifier` over the registry's tokens table.

    `repository` returns the Repository, raising `lwdock.errors.Unavailable` while the
    database is not ready; a database outage is UNAVAILABLE (clients retry), never
    UNAUTHENTICATED.
    """

    def __init__(
        self,
        repository: Callable[[], Repository],
        *,
        ttl_s: float = DEFAULT_TOKEN_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def clear(self) -> None:
        self._cache.clear()

    async def verify(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX):
            return None  # not one of ours: no query
        key = hash_token(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            row = await self._repository().find_token_by_sha256(key, active_only=True)
        except psycopg.Error as exc:  # not mapped by the repository: still "cannot tell now"
            raise Unavailable("cannot verify the token: the registry database failed") from exc
        principal = None
        expires = now + self.ttl_s
        if row is not None:
            principal = Principal(row.principal, row.role.value.lower())
            if row.expire_time is not None:  # never trust a cached token past its expiry
                left = (row.expire_time - datetime.now(UTC)).total_seconds()
                expires = min(expires, now + max(0.0, left))
        if len(self._cache) >= MAX_CACHED_TOKENS:
            self._cache.clear()
        if self.ttl_s > 0:
            self._cache[key] = (expires, principal)
        return principal


async def create_token_in_database(
    database_url: str, principal: str, role: str, display_name: str = ""
) -> tuple[TokenRow, str]:
    """Bootstrap: store a new token straight in the database (migrating it first), e.g. the
    first admin's. Returns the row and the secret, which is shown once and never stored."""
    from psycopg_pool import AsyncConnectionPool

    from lwdock.errors import InvalidArgument
    from registry_service.migrations import migrate

    try:
        parsed = Role(role.upper())
    except ValueError:
        raise InvalidArgument.for_field(
            "role", f"unknown role {role!r}; one of reader, developer, admin"
        ) from None
    if not principal:
        raise InvalidArgument.for_field("principal", "required, e.g. users/alice")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, open=False, min_size=1, max_size=1, kwargs={"autocommit": True}
    )
    await pool.open(wait=True, timeout=10.0)
    try:
        await migrate(pool)
        secret = new_token()
        row = await Repository(pool).create_token(
            principal=principal,
            role=parsed,
            token_sha256=hash_token(secret),
            display_name=display_name,
        )
    finally:
        await pool.close()
    return row, secret
