"""Shared fixtures: a real PostgreSQL and the four services on loopback ports.

PostgreSQL: LWDOCK_TEST_DATABASE_URL when set, else the embedded server in a temp dir.
Services: real grpc.aio servers built by each service's `build_app`, bound to 127.0.0.1:0
with `grpc.so_reuseport` off, in the test process's event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.embedded_db import EmbeddedPostgres
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "reference"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("LWDOCK_TEST_DATABASE_URL")
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="lwdock-test-pg-"))
    server = EmbeddedPostgres.start(tmp / "pgdata")
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def test_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="lwdock-test-home-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class Suite:
    """The four running services: handles and `127.0.0.1:port` addresses by short name."""

    handles: dict[str, ServerHandle]

    def address(self, name: str) -> str:
        return self.handles[name].address

    @property
    def addresses(self) -> dict[str, str]:
        return {name: handle.address for name, handle in self.handles.items()}


def service_settings(test_home: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": test_home,
        "port": 0,
        "database_url": database_url,
        "drain_delay_s": 0.0,
        "grace_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="session")
async def suite(database_url: str, test_home: Path) -> AsyncIterator[Suite]:
    from registry_service.server import build_app as registry_app
    from reuse_service.server import build_app as reuse_app
    from search_service.server import build_app as search_app
    from spec_service.server import build_app as spec_app

    settings = service_settings(test_home, database_url)
    handles: dict[str, ServerHandle] = {}
    for name, factory in (
        ("spec", spec_app),
        ("registry", registry_app),
        ("search", search_app),
        ("reuse", reuse_app),
    ):
        # search and reuse reach the registry started before them (search serves once it
        # has caught up with the registry's change feed); no check worker here
        if name == "search":
            settings = settings.model_copy(update={"registry_address": handles["registry"].address})
        handles[name] = await start(factory(settings), settings)
    try:
        yield Suite(handles)
    finally:
        for handle in handles.values():
            await handle.stop(settings)


@pytest_asyncio.fixture
async def channels(suite: Suite) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(addr) for name, addr in suite.addresses.items()}
    try:
        yield opened
    finally:
        for channel in opened.values():
            await channel.close()


def venv_bin(name: str) -> str:
    """A console script of the test's own environment (grpcurl, buf, lwdock)."""
    import sys

    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed in the test environment")
    return found


async def wait_serving(channel: grpc.aio.Channel, service: str, attempts: int = 300) -> None:
    """Poll grpc.health.v1 every 0.1 s until `service` is SERVING; fail the test otherwise."""
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(attempts):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{service} never became SERVING")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1, for the S3 blob store."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
