"""PostgreSQL access for the registry: one psycopg 3 async connection pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("lwdock.registry.db")


class Database:
    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            url, open=False, min_size=1, max_size=max_size, kwargs={"autocommit": True}
        )

    async def open(self) -> None:
        # wait=False: the service starts even while PostgreSQL is down, and says so on health.
        await self.pool.open(wait=False)

    async def ping(self, timeout_s: float = 2.0) -> bool:
        try:
            async with self.pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception as exc:  # any failure means "not reachable now"
            log.warning("database unreachable", extra={"error": str(exc)})
            return False

    async def close(self) -> None:
        await self.pool.close()


async def monitor(
    db: Database, report: Callable[[bool], Awaitable[None]], interval_s: float = 2.0
) -> None:
    """Report reachability at start and on every change, until cancelled."""
    last: bool | None = None
    while True:
        ok = await db.ping()
        if ok != last:
            await report(ok)
            last = ok
        await asyncio.sleep(interval_s)
