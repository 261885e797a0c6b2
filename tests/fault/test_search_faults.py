"""Faults around search_service, with real processes killed by SIGKILL.

The registry (without a check worker: learnwares are activated straight in PostgreSQL, the
check is not what is under test) and search_service run as child processes on fixed
loopback ports, so either can be killed and started again on the same address.

- search_service killed and restarted: it comes back from its snapshot (written at its first
  catch-up, so older than what it had when it died), replays what it missed, and ends exactly
  where a search_service started from nothing ends: the same learnwares, the same results.
- registry killed: search_service keeps serving the index it has, its stats say it is not
  synced and why (health stays SERVING on purpose: readiness must not drop every replica
  when the registry blips; `lwdock_search_synced` is 0); once the registry is back, changes
  made meanwhile arrive and it converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.request
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
from search_service.server import SERVICE_NAME as SEARCH
from tests.test_search_service import free_port, package, semantic_json, spec_at, stat_request

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


async def caught_up(search: Child, repo: Repository) -> bool:
    try:
        got = await stats(search)
    except grpc.aio.AioRpcError:
        return False
    return got.synced and got.last_sequence == await repo.latest_sequence()


async def results(search: Child, specs: list[RKMESpec]) -> list[list[tuple[str, float]]]:
    """For each spec: (learnware id, mmd²) of every single result, best first."""
    async with grpc.aio.insecure_channel(search.address) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        out = []
        for spec in specs:
            reply = await stub.SearchLearnwares(
                stat_request(spec, page_size=50, max_mixture=1), timeout=10
            )
            out.append([(r.learnware_id, round(r.mmd2, 12)) for r in reply.single_results])
        return out


def metric(search: Child, name: str) -> float | None:
    url = f"http://127.0.0.1:{search.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def test_search_killed_and_restarted_catches_up_exactly(world: World) -> None:
    specs = [spec_at(c, seed=s) for s, c in enumerate((3.0, -3.0, 8.0, -8.0))]
    a = await world.upload_active(specs[0], "fault-a")
    b = await world.upload_active(specs[1], "fault-b")
    search = world.search(world.home / "search")
    await search.start()
    await wait_for(lambda: caught_up(search, world.repo), 30)
    assert (await stats(search)).learnware_count == 2
    # After the first catch-up (whose snapshot the restart will start from), more changes.
    c = await world.upload_active(specs[2], "fault-c")
    await wait_for(lambda: caught_up(search, world.repo), 10)

    at_kill = (await stats(search)).last_sequence
    await search.kill()
    # While it is dead: one rejected, one deleted, one new.
    await world.repo.set_state(a, State.REJECTED, "fault test")
    await world.delete(b)
    d = await world.upload_active(specs[3], "fault-d")

    search.logs.clear()
    await search.start()
    await wait_for(lambda: caught_up(search, world.repo), 30)
    # It started from its snapshot of the first catch-up (older than what it had at the kill:
    # nothing is written at a SIGKILL), then replayed the rest.
    (loaded,) = search.logged("index loaded from snapshot")
    assert 0 < int(str(loaded["last_sequence"])) < at_kill
    fresh = world.search(world.home / "fresh")  # no snapshot: replays everything
    await fresh.start()
    await wait_for(lambda: caught_up(fresh, world.repo), 30)

    restarted, replayed = await results(search, specs), await results(fresh, specs)
    assert restarted == replayed
    assert {lid for found in restarted for lid, _ in found} == {c, d}
    assert (await stats(search)).learnware_count == (await stats(fresh)).learnware_count == 2
    assert (await stats(search)).last_sequence == await world.repo.latest_sequence()


async def test_registry_killed_search_keeps_serving_and_says_so(world: World) -> None:
    spec = spec_at(5.0, seed=21)
    kept = await world.upload_active(spec, "fault-kept")
    search = world.search(world.home / "search")
    await search.start()
    await wait_for(lambda: caught_up(search, world.repo), 30)
    assert metric(search, "lwdock_search_synced") == 1.0

    await world.registry.kill()

    async def says_unsynced() -> bool:
        got = await stats(search)
        return not got.synced and bool(got.sync_error)

    await wait_for(says_unsynced, 15)
    # Still serving the index it has.
    assert [lid for lid, _ in (await results(search, [spec]))[0]] == [kept]
    assert await serving(search.address, SEARCH)
    assert metric(search, "lwdock_search_synced") == 0.0
    assert (await stats(search)).sync_lag_seconds > 0

    # Changed while the registry is away; seen once it is back.
    await world.repo.set_state(kept, State.REJECTED, "fault test")
    await world.registry.start()
    await wait_for(lambda: caught_up(search, world.repo), 30)
    assert (await results(search, [spec]))[0] == []
    assert metric(search, "lwdock_search_synced") == 1.0
