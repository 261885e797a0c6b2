"""Wiring of registry_service: servicer, PostgreSQL pool, readiness from the database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import grpc

from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, ServiceApp, run
from lwdock.settings import Settings, add_server_arguments, settings_from_args
from registry_service.auth import DEFAULT_TOKEN_CACHE_TTL_S, DatabaseTokenVerifier
from registry_service.blobs_config import check_blob_store, make_blob_store
from registry_service.blobstore import collect_orphans
from registry_service.checks import CheckWorker, CheckWorkerOptions
from registry_service.database import Database, monitor
from registry_service.metrics import refresh_check_queue_depth_forever
from registry_service.migrations import MigrationError, migrate
from registry_service.repository import Repository
from registry_service.service import RegistryService
from registry_service.servicer import RegistryServicer

SERVICE_NAME = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

log = logging.getLogger("lwdock.registry")

# Migrations are retried while PostgreSQL is unreachable: backoff from 0.5 s, capped at 10 s.
MIGRATE_BACKOFF_S = 0.5
MIGRATE_BACKOFF_MAX_S = 10.0


async def migrate_with_retry(db: Database) -> bool:
    """Apply migrations, retrying with backoff while the database is unreachable. False
    (and stays NOT_SERVING) when the schema cannot be migrated (MigrationError)."""
    delay = MIGRATE_BACKOFF_S
    attempt = 0
    while True:
        attempt += 1
        try:
            applied = await migrate(db.pool)
        except MigrationError:
            log.exception("database schema does not match this version's migrations")
            return False
        except Exception as exc:  # unreachable database: try again later
            log.warning(
                "migrations failed, retrying",
                extra={"attempt": attempt, "retry_in_s": delay, "error": str(exc)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MIGRATE_BACKOFF_MAX_S)
            continue
        log.info("database migrated", extra={"applied": applied})
        return True


# Garbage collection of blobs without a learnware: hourly, for blobs older than a day.
ORPHAN_INTERVAL_S = 3600.0
ORPHAN_AGE_S = 86400.0


def build_app(
    settings: Settings,
    *,
    token_cache_ttl_s: float = DEFAULT_TOKEN_CACHE_TTL_S,
    check_worker: CheckWorkerOptions | None = None,
    orphan_interval_s: float = ORPHAN_INTERVAL_S,
    orphan_age_s: float = ORPHAN_AGE_S,
) -> ServiceApp:
    """`check_worker`: run check jobs against reuse_service (settings.reuse_address) with
    these options once the database is migrated; None = no worker in this process (jobs stay
    queued, learnwares PENDING, until a registry with a worker runs them)."""
    db = Database(settings.database_url) if settings.database_url else None
    repo = Repository(db.pool) if db is not None else None
    blobs = make_blob_store(settings)
    service = RegistryService(repo, blobs)
    worker = (
        CheckWorker(repo, blobs, settings.reuse_address, check_worker, token=settings.service_token)
        if repo is not None and check_worker is not None
        else None
    )
    # Tokens from CreateToken (or `lwdock token create`) live in the database; the tokens
    # file is asked first, so its tokens work even while the database is down.
    token_verifier = DatabaseTokenVerifier(lambda: service.repo, ttl_s=token_cache_ttl_s)
    tasks: list[asyncio.Task[None]] = []

    def register(server: grpc.aio.Server) -> None:
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
            RegistryServicer(service, max_package_bytes=settings.max_package_bytes), server
        )

    async def collect_orphans_forever() -> None:
        """Blobs no learnware points to (failed uploads, deleted or replaced packages) are
        removed once older than `orphan_age_s`, so an upload in flight is never touched."""
        assert repo is not None
        while True:
            await asyncio.sleep(orphan_interval_s)
            try:
                removed = await collect_orphans(
                    blobs, await repo.referenced_packages(), older_than_s=orphan_age_s
                )
                if removed:
                    log.info("collected orphan blobs", extra={"count": len(removed)})
            except Exception as exc:  # the next round tries again
                log.warning("orphan collection failed", extra={"error": str(exc)})

    async def on_start(handle: ServerHandle) -> None:
        if db is None:
            log.error("no database configured (LWDOCK_DATABASE_URL): reporting NOT_SERVING")
            return
        await db.open()

        async def report(ok: bool) -> None:
            log.info("database reachable" if ok else "database unreachable")
            await handle.set_serving(SERVICE_NAME, ok)

        async def migrate_then_monitor() -> None:
            # SERVING only after the schema is current and while the database answers.
            if not await migrate_with_retry(db):
                return
            try:  # an S3 bucket that is missing or unreachable keeps us NOT_SERVING
                await check_blob_store(blobs)
            except Exception as exc:
                log.error("blob store unusable: staying NOT_SERVING", extra={"error": str(exc)})
                return
            service.ready = True
            if worker is not None:
                worker.start()
            tasks.append(asyncio.create_task(collect_orphans_forever()))
            tasks.append(asyncio.create_task(refresh_check_queue_depth_forever(repo)))
            await monitor(db, report)

        tasks.append(asyncio.create_task(migrate_then_monitor()))

    async def on_stop() -> None:
        if worker is not None:
            await worker.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if db is not None:
            await db.close()

    return ServiceApp(
        name="registry",
        services=[SERVICE_NAME],
        register=register,
        on_start=on_start,
        on_stop=on_stop,
        # SERVING only once PostgreSQL answers.
        initially_not_serving={SERVICE_NAME},
        token_verifier=token_verifier,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="registry_service", description=__doc__)
    add_server_arguments(parser)
    # The service as deployed runs its check worker (tests opt in through build_app).
    run(
        lambda settings: build_app(settings, check_worker=CheckWorkerOptions()),
        settings_from_args(parser.parse_args(argv)),
    )
