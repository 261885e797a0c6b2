"""Fault: PostgreSQL stops and comes back while a package is being uploaded.

A private embedded PostgreSQL (not the session's: it is stopped here), a real registry server
in this process. The upload is a client stream written by hand so PostgreSQL can be stopped
between its chunks. Expected: the client gets UNAVAILABLE, nothing of the learnware is
stored, health says NOT_SERVING while the database is away, and once it is back a retry
with the same request_id succeeds; another retry returns the same learnware.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.embedded_db import EmbeddedPostgres
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.server.bootstrap import start
from lwdock.tokens import add_token, new_token
from lwdock.uploads import create_learnware_requests
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import service_settings, wait_serving
from tests.test_registry_service import SEMANTIC_JSON, ZIP

REQUEST_ID = "fault-pg-restart-1"


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    tmp = Path(tempfile.mkdtemp(prefix="lwdock-fault-pg-"))
    server = EmbeddedPostgres.start(tmp / "pgdata")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def restart(server: EmbeddedPostgres) -> None:
    """Start the stopped server again on the same data directory (same socket, same URL)."""
    server._server.ensure_postgres_running()  # type: ignore[attr-defined]


async def health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
    )
    return int(reply.status)


async def wait_health(channel: grpc.aio.Channel, status: int, within_s: float = 20) -> None:
    for _ in range(int(within_s / 0.1)):
        if await health(channel) == status:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")


def stored(url: str) -> tuple[int, int, int]:
    """(learnwares, uploads with our request_id, check jobs) in the database."""
    with psycopg.connect(url) as conn:
        learnwares = conn.execute("SELECT count(*) FROM learnwares").fetchone()
        uploads = conn.execute(
            "SELECT count(*) FROM uploads WHERE request_id = %s", (REQUEST_ID,)
        ).fetchone()
        jobs = conn.execute("SELECT count(*) FROM check_jobs").fetchone()
    assert learnwares and uploads and jobs
    return int(learnwares[0]), int(uploads[0]), int(jobs[0])


async def test_postgres_restart_mid_upload(private_postgres: EmbeddedPostgres, tmp_path: Path):
    url = private_postgres.url
    tokens_file, token = tmp_path / "tokens.json", new_token()
    add_token(tokens_file, token, "users/dev", "developer")
    auth = (("authorization", f"Bearer {token}"),)
    settings = service_settings(tmp_path, url, tokens_file=tokens_file, blob_dir=tmp_path / "b")
    handle = await start(build_app(settings), settings)
    messages = create_learnware_requests(
        ZIP, semantic_json=SEMANTIC_JSON, request_id=REQUEST_ID, chunk_bytes=64 * 1024
    )
    assert len(messages) > 3
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            await wait_serving(channel, SERVICE_NAME)
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)

            # Header and the first chunks, then PostgreSQL goes away, then the rest.
            call = stub.CreateLearnware(metadata=auth, timeout=60)
            for message in messages[:2]:
                await call.write(message)
            await asyncio.to_thread(private_postgres.stop)
            for message in messages[2:]:
                await call.write(message)
            await call.done_writing()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
            await wait_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)

            await asyncio.to_thread(restart, private_postgres)
            # Nothing half-written: no learnware, no upload record, no check job.
            assert await asyncio.to_thread(stored, url) == (0, 0, 0)
            await wait_health(channel, health_pb2.HealthCheckResponse.SERVING)

            # The client's retry with the same request_id succeeds, once.
            first = await stub.CreateLearnware(iter(messages), metadata=auth, timeout=30)
            again = await stub.CreateLearnware(iter(messages), metadata=auth, timeout=30)
            assert first.name and again.name == first.name
            assert await asyncio.to_thread(stored, url) == (1, 1, 1)
            got = await stub.GetLearnware(pb.GetLearnwareRequest(name=first.name), timeout=10)
            assert got.package.sha256 == hashlib.sha256(ZIP).hexdigest()
            assert got.package.size_bytes == len(ZIP)
    finally:
        await handle.stop(settings)
