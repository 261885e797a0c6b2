"""A real registry in a child process (without its check worker: learnwares are activated
straight in PostgreSQL) and search_service processes started against it, on fixed loopback
ports, so that either can be killed and started again on the same address: the `world`
fixture of tests/fault (re-exported by its conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as registry_pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import search_service_pb2 as search_pb
from lwdock.search.v1 import search_service_pb2_grpc
from lwdock.tokens import add_token, new_token
from lwdock.uploads import create_learnware_requests
from registry_service.database import Database
from registry_service.repository import Repository, State
from tests.test_search_service import free_port, package, semantic_json

# The registry as deployed, minus the check worker (python -m registry_service starts one).
REGISTRY_MAIN = (
    "from registry_service.server import build_app; from lwdock.server.bootstrap import run; "
    "from lwdock.settings import Settings; run(build_app, Settings())"
)


@dataclass
class Child:
    """A service process: started, waited for, killed, started again on the same port."""

    argv: list[str]
    env: dict[str, str]
    port: int
    metrics_port: int | None = None
    process: asyncio.subprocess.Process | None = None
    logs: list[dict[str, object]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stderr=asyncio.subprocess.PIPE
        )
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._keep(raw)
            if self.logs and self.logs[-1].get("msg") == "listening":
                asyncio.get_running_loop().create_task(self._drain(self.process.stderr))
                return
        raise AssertionError(f"{self.argv} exited with {await self.process.wait()}")

    def _keep(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict):
                self.logs.append(line)

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self._keep(raw)

    def logged(self, msg: str) -> list[dict[str, object]]:
        return [line for line in self.logs if line.get("msg") == msg]

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class World:
    registry: Child
    repo: Repository
    auth: tuple[tuple[str, str], ...]
    env: dict[str, str]
    home: Path
    children: list[Child]

    def search(self, home: Path) -> Child:
        env = {
            **self.env,
            "LWDOCK_HOME": str(home),
            "LWDOCK_PORT": str(free_port()),
            "LWDOCK_METRICS_PORT": str(free_port()),
        }
        child = Child(
            [sys.executable, "-m", "search_service"],
            env,
            int(env["LWDOCK_PORT"]),
            int(env["LWDOCK_METRICS_PORT"]),
        )
        self.children.append(child)
        return child

    async def upload_active(self, spec: RKMESpec, name: str) -> str:
        async with grpc.aio.insecure_channel(self.registry.address) as channel:
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            requests = create_learnware_requests(package(spec), semantic_json=semantic_json(name))
            learnware = await stub.CreateLearnware(iter(requests), metadata=self.auth, timeout=30)
        await self.repo.set_state(learnware.learnware_id, State.ACTIVE)
        return str(learnware.learnware_id)

    async def delete(self, learnware_id: str) -> None:
        async with grpc.aio.insecure_channel(self.registry.address) as channel:
            await registry_service_pb2_grpc.RegistryServiceStub(channel).DeleteLearnware(
                registry_pb.DeleteLearnwareRequest(name=f"learnwares/{learnware_id}"),
                metadata=self.auth,
                timeout=30,
            )


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    with scratch_database(database_url, "lwdock_fault_search") as url:
        token = new_token()
        add_token(tmp_path / "tokens.json", token, "users/dev", "developer")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")},
            "LWDOCK_DATABASE_URL": url,
            "LWDOCK_TOKENS_FILE": str(tmp_path / "tokens.json"),
            "LWDOCK_BLOB_DIR": str(tmp_path / "blobs"),
            "LWDOCK_DRAIN_DELAY_S": "0",
            "LWDOCK_GRACE_S": "1",
        }
        port = free_port()
        env["LWDOCK_REGISTRY_ADDRESS"] = f"127.0.0.1:{port}"
        registry_env = {**env, "LWDOCK_HOME": str(tmp_path / "registry"), "LWDOCK_PORT": str(port)}
        registry = Child([sys.executable, "-c", REGISTRY_MAIN], registry_env, port)
        db = Database(url)
        await db.pool.open(wait=True)
        world = World(
            registry,
            Repository(db.pool),
            (("authorization", f"Bearer {token}"),),
            env,
            tmp_path,
            [registry],
        )
        try:
            await registry.start()
            await wait_for(lambda: serving(registry.address, ""), 30)
            await wait_for(lambda: serving(registry.address, REGISTRY), 30)
            yield world
        finally:
            for child in world.children:
                await child.stop()
            await db.close()


REGISTRY = "lwdock.registry.v1.RegistryService"


async def serving(address: str, service: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def wait_for(check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not true within {within_s} s")
        await asyncio.sleep(0.1)


async def stats(search: Child) -> search_pb.GetIndexStatsResponse:
    async with grpc.aio.insecure_channel(search.address) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        return await stub.GetIndexStats(search_pb.GetIndexStatsRequest(), timeout=5)
