"""search_service against a real registry (its own PostgreSQL database, real packages built
from the reference fixture with our own stat specs): the index follows creates, activations,
updates, rejections and deletes within 2 s; a restart resumes from its snapshot and catches up
exactly; a registry that is down, then up, then down and up again is followed to convergence,
with NOT_SERVING on health until the first catch-up; errors and empty results over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from lwdock.common.v1 import learnware_pb2, specification_pb2
from lwdock.converters import rkme_to_proto
from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as registry_pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import resources_pb2 as search_resources_pb2
from lwdock.search.v1 import search_service_pb2 as search_pb
from lwdock.search.v1 import search_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.settings import Settings
from lwdock.tokens import add_token, new_token
from lwdock.uploads import create_learnware_requests
from registry_service.database import Database
from registry_service.repository import Repository, State
from registry_service.server import SERVICE_NAME as REGISTRY_SERVICE
from registry_service.server import build_app as registry_app
from search_service.index import SearchIndex, SearchRequest
from search_service.server import SERVICE_NAME as SEARCH_SERVICE
from search_service.server import SYNC_CHECK
from search_service.server import build_app as search_app
from search_service.snapshot import load_snapshot
from search_service.sync import FollowerOptions, RegistryFollower
from tests.conftest import service_settings, wait_serving
from tests.test_registry_service import SEMANTIC_JSON, ZIP

D = 64  # the fixture package's input dimension
FOLLOW = FollowerOptions(backoff_initial_s=0.05, backoff_max_s=0.4, snapshot_interval_s=0.5)
VISIBLE_WITHIN_S = 2.0
SearchStub = search_service_pb2_grpc.SearchServiceStub


def spec_at(centre: float, seed: int, points: int = 12) -> RKMESpec:
    rng = np.random.default_rng(seed)
    return RKMESpec(
        z=centre + rng.normal(size=(points, D)), beta=np.full(points, 1 / points), gamma=0.1
    )


def package(spec: RKMESpec) -> bytes:
    """The fixture package with `spec` as its stat_spec.json (a new sha256 every time)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(ZIP)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "stat_spec.json":
                data = spec.to_reference_json().encode()
            dst.writestr(info, data)
        dst.comment = uuid.uuid4().hex.encode()
    return out.getvalue()


def semantic_json(name: str) -> str:
    semantic = json.loads(SEMANTIC_JSON)
    semantic["Name"]["Values"] = name
    semantic["Description"]["Values"] = f"Search test learnware called {name}."
    return json.dumps(semantic)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    handle: ServerHandle
    settings: Settings
    stub: registry_service_pb2_grpc.RegistryServiceStub
    repo: Repository
    token: str
    home: Path
    database_url: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def upload(self, spec: RKMESpec, name: str) -> learnware_pb2.Learnware:
        requests = create_learnware_requests(package(spec), semantic_json=semantic_json(name))
        return await self.stub.CreateLearnware(iter(requests), metadata=self.auth)

    async def activate(self, learnware: learnware_pb2.Learnware) -> None:
        await self.repo.set_state(learnware.learnware_id, State.ACTIVE)


@pytest.fixture(scope="module")
def search_db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "lwdock_search") as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def world(search_db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    home = tmp_path_factory.mktemp("search-registry")
    token = new_token()
    add_token(home / "tokens.json", token, "users/alice", "developer")
    settings = service_settings(home, search_db, tokens_file=home / "tokens.json")
    handle = await start(registry_app(settings), settings)
    channel = grpc.aio.insecure_channel(handle.address)
    db = Database(search_db)
    await db.pool.open(wait=True)
    try:
        await wait_serving(channel, REGISTRY_SERVICE)
        yield World(
            handle,
            settings,
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            Repository(db.pool),
            token,
            home,
            search_db,
        )
    finally:
        await channel.close()
        await handle.stop(settings)
        await db.close()


@contextlib.asynccontextmanager
async def search_server(
    world: World, snapshot_dir: Path, registry_address: str | None = None
) -> AsyncIterator[tuple[search_service_pb2_grpc.SearchServiceStub, grpc.aio.Channel]]:
    settings = service_settings(
        world.home,
        world.database_url,
        registry_address=registry_address or world.handle.address,
        search_snapshot_dir=snapshot_dir,
    )
    handle = await start(search_app(settings, follower_options=FOLLOW), settings)
    channel = grpc.aio.insecure_channel(handle.address)
    try:
        yield search_service_pb2_grpc.SearchServiceStub(channel), channel
    finally:
        await channel.close()
        await handle.stop(settings)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    """Seconds until `check()` holds; fails the test after `within_s`."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within_s:
            pytest.fail(f"not true within {within_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def stat_request(spec: RKMESpec, **kwargs: object) -> search_pb.SearchLearnwaresRequest:
    return search_pb.SearchLearnwaresRequest(
        statistical_specification=specification_pb2.StatisticalSpecification(
            rkme=rkme_to_proto(spec)
        ),
        **kwargs,  # type: ignore[arg-type]
    )


async def top_ids(stub: search_service_pb2_grpc.SearchServiceStub, spec: RKMESpec) -> list[str]:
    reply = await stub.SearchLearnwares(stat_request(spec, page_size=50, max_mixture=1))
    return [r.learnware_id for r in reply.single_results]


async def test_index_follows_the_registry(world: World, tmp_path: Path) -> None:
    async with search_server(world, tmp_path / "snap") as (stub, channel):
        await wait_serving(channel, SEARCH_SERVICE)
        spec_a = spec_at(0.0, seed=1)
        a = await world.upload(spec_a, "follow-alpha")
        await asyncio.sleep(0.3)  # PENDING learnwares are not searchable
        assert a.learnware_id not in await top_ids(stub, spec_a)

        await world.activate(a)
        took = await eventually(
            lambda: _contains(stub, spec_a, a.learnware_id), within_s=VISIBLE_WITHIN_S
        )
        assert took < VISIBLE_WITHIN_S
        reply = await stub.SearchLearnwares(stat_request(spec_a, max_mixture=1))
        best = reply.single_results[0]
        assert best.learnware_id == a.learnware_id
        assert best.mmd2 == pytest.approx(0.0, abs=1e-6) and best.similarity == pytest.approx(1.0)
        assert reply.index_sequence > 0

        # A name change keeps it ACTIVE; the semantic index follows.
        change = learnware_pb2.Learnware(name=a.name)
        change.semantic_specification.name = "renamed-omega"
        await world.stub.UpdateLearnware(
            registry_pb.UpdateLearnwareRequest(
                learnware=change,
                update_mask=field_mask_pb2.FieldMask(paths=["semantic_specification.name"]),
            ),
            metadata=world.auth,
        )

        async def renamed() -> bool:
            query = search_pb.SearchLearnwaresRequest()
            query.semantic_query.text = "renamed-omega"
            ids = [r.learnware_id for r in (await stub.SearchLearnwares(query)).single_results]
            return ids == [a.learnware_id]

        await eventually(renamed, within_s=VISIBLE_WITHIN_S)

        # A second one, then rejected: it leaves the index.
        spec_b = spec_at(3.0, seed=2)
        b = await world.upload(spec_b, "follow-beta")
        await world.activate(b)
        await eventually(lambda: _contains(stub, spec_b, b.learnware_id), VISIBLE_WITHIN_S)
        await world.repo.set_state(b.learnware_id, State.REJECTED, "test")
        await eventually(lambda: _absent(stub, spec_b, b.learnware_id), VISIBLE_WITHIN_S)

        # Deleted: gone.
        await world.stub.DeleteLearnware(
            registry_pb.DeleteLearnwareRequest(name=a.name), metadata=world.auth
        )
        await eventually(lambda: _absent(stub, spec_a, a.learnware_id), VISIBLE_WITHIN_S)

        latest = await world.repo.latest_sequence()
        stats = await stub.GetIndexStats(search_pb.GetIndexStatsRequest())
        assert stats.synced and stats.last_sequence == latest and stats.sync_lag_seconds == 0
        assert REGISTRY.get_sample_value("lwdock_search_last_sequence") == latest
        assert REGISTRY.get_sample_value("lwdock_search_synced") == 1.0


async def _contains(
    stub: search_service_pb2_grpc.SearchServiceStub, spec: RKMESpec, i: str
) -> bool:
    return i in await top_ids(stub, spec)


async def _absent(stub: SearchStub, spec: RKMESpec, i: str) -> bool:
    return i not in await top_ids(stub, spec)


async def test_errors_and_empty_results(world: World, tmp_path: Path) -> None:
    spec = spec_at(-2.0, seed=5)
    c = await world.upload(spec, "errors-gamma")
    await world.activate(c)
    async with search_server(world, tmp_path / "snap") as (stub, channel):
        await wait_serving(channel, SEARCH_SERVICE)
        await eventually(lambda: _contains(stub, spec, c.learnware_id), VISIBLE_WITHIN_S)
        # A dimension no learnware has: empty with a reason.
        other = RKMESpec(z=np.zeros((2, 5)), beta=np.full(2, 0.5))
        reply = await stub.SearchLearnwares(stat_request(other))
        assert not reply.single_results and "d=5" in reply.empty_reason
        # A malformed spec: INVALID_ARGUMENT naming the field.
        bad = search_pb.SearchLearnwaresRequest()
        bad.statistical_specification.reference_json = '{"z": [[1, 2]], "beta": [1, 2]}'
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SearchLearnwares(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "beta" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SearchLearnwares(search_pb.SearchLearnwaresRequest(page_token="garbage"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # An unbounded mixture would re-rank the whole market: refused, naming the field.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SearchLearnwares(stat_request(spec, max_mixture=11))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_mixture" in (caught.value.details() or "")
        # include_learnwares: the learnware itself, read from the registry.
        plain = await stub.SearchLearnwares(stat_request(spec, max_mixture=1))
        assert not plain.single_results[0].HasField("learnware")
        request = stat_request(spec, max_mixture=1)
        request.include_learnwares = True
        full = await stub.SearchLearnwares(request)
        best = full.single_results[0]
        assert best.learnware_id == c.learnware_id
        assert best.learnware.name == c.name and best.learnware.learnware_id == c.learnware_id
        assert best.learnware.semantic_specification.name == "errors-gamma"
        # Pages over gRPC.
        first = await stub.SearchLearnwares(search_pb.SearchLearnwaresRequest(page_size=1))
        assert first.candidate_count >= 1 and len(first.single_results) == 1
        stats = await stub.GetIndexStats(search_pb.GetIndexStatsRequest())
        (partition,) = [p for p in stats.partitions if p.key.startswith("RKMETable")]
        assert isinstance(partition, search_resources_pb2.PartitionStats)
        assert partition.key == "RKMETableSpecification/d=64/gamma=0.1"
        assert partition.index_type == "IDMap2,Flat" and partition.memory_bytes_per_learnware > 0
    await world.stub.DeleteLearnware(
        registry_pb.DeleteLearnwareRequest(name=c.name), metadata=world.auth
    )


async def test_restart_resumes_from_snapshot_exactly(world: World, tmp_path: Path) -> None:
    snapshot_dir = tmp_path / "snap"
    kept, dropped = spec_at(6.0, seed=7), spec_at(-6.0, seed=8)
    lw_kept = await world.upload(kept, "restart-kept")
    lw_dropped = await world.upload(dropped, "restart-dropped")
    await world.activate(lw_kept)
    await world.activate(lw_dropped)

    first = SearchIndex()
    follower = RegistryFollower(
        first, world.handle.address, snapshot_dir=snapshot_dir, options=FOLLOW
    )
    follower.start()
    await eventually(lambda: _synced(first, world), within_s=10)
    await follower.stop()  # writes the snapshot
    at_stop = first.last_sequence

    # While the search service is down: one learnware leaves, one arrives.
    await world.repo.set_state(lw_dropped.learnware_id, State.REJECTED, "test")
    late = spec_at(9.0, seed=9)
    lw_late = await world.upload(late, "restart-late")
    await world.activate(lw_late)

    resumed = SearchIndex()
    assert load_snapshot(resumed, snapshot_dir)
    assert resumed.last_sequence == at_stop and resumed.records == first.records
    follower = RegistryFollower(resumed, world.handle.address, options=FOLLOW)
    follower.start()
    try:
        await eventually(lambda: _synced(resumed, world), within_s=10)
    finally:
        await follower.stop()
    # Only the changes after the snapshot were applied: the drop and the late arrival.
    assert resumed.changes == 2

    replayed = SearchIndex()
    follower = RegistryFollower(replayed, world.handle.address, options=FOLLOW)
    follower.start()
    try:
        await eventually(lambda: _synced(replayed, world), within_s=10)
    finally:
        await follower.stop()
    assert resumed.last_sequence == replayed.last_sequence
    assert resumed.records == replayed.records and resumed.placement == replayed.placement
    assert lw_late.learnware_id in resumed.records
    assert lw_dropped.learnware_id not in resumed.records
    for spec in (kept, dropped, late):
        request = SearchRequest(spec=spec, page_size=20)
        ours, theirs = resumed.search(request).singles, replayed.search(request).singles
        # Same learnwares, same exact distances; the scores' estimated mean is a running sum
        # over the partition, so it may differ in the last bits with the order of changes.
        assert [(h.learnware_id, h.mmd2) for h in ours] == [
            (h.learnware_id, h.mmd2) for h in theirs
        ]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=1e-9)
    for learnware in (lw_kept, lw_late):
        await world.stub.DeleteLearnware(
            registry_pb.DeleteLearnwareRequest(name=learnware.name), metadata=world.auth
        )


async def _synced(index: SearchIndex, world: World) -> bool:
    return index.synced and index.last_sequence == await world.repo.latest_sequence()


async def test_registry_down_then_up_converges(world: World, tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    registry_settings = service_settings(
        world.home, world.database_url, port=port, tokens_file=world.home / "tokens.json"
    )
    spec = spec_at(12.0, seed=11)
    lw = await world.upload(spec, "downup-one")
    await world.activate(lw)
    async with search_server(world, tmp_path / "snap", registry_address=address) as (
        stub,
        channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        # Nothing listens at the registry address: NOT_SERVING, not synced, still answering.
        await asyncio.sleep(1.0)
        status = await health.Check(health_pb2.HealthCheckRequest(service=SEARCH_SERVICE))
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stats = await stub.GetIndexStats(search_pb.GetIndexStatsRequest())
        assert not stats.synced and stats.sync_lag_seconds > 0.5 and stats.sync_error
        assert (await stub.SearchLearnwares(stat_request(spec))).single_results == []

        # The registry comes up on that address: the index catches up and serves.
        handle = await start(registry_app(registry_settings), registry_settings)
        try:
            await wait_serving(channel, SEARCH_SERVICE)
            await eventually(lambda: _contains(stub, spec, lw.learnware_id), 10)
        finally:
            await handle.stop(registry_settings)

        # Down again: the last index keeps serving, stats say not synced.
        async def unsynced() -> bool:
            stats = await stub.GetIndexStats(search_pb.GetIndexStatsRequest())
            return not stats.synced

        await eventually(unsynced, within_s=5)
        assert lw.learnware_id in await top_ids(stub, spec)
        status = await health.Check(health_pb2.HealthCheckRequest(service=SEARCH_SERVICE))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        # ... and health says the index is stale, on its own check.
        sync = await health.Check(health_pb2.HealthCheckRequest(service=SYNC_CHECK))
        assert sync.status == health_pb2.HealthCheckResponse.NOT_SERVING

        # A change while it is down arrives once the registry is back.
        await world.stub.DeleteLearnware(
            registry_pb.DeleteLearnwareRequest(name=lw.name), metadata=world.auth
        )
        handle = await start(registry_app(registry_settings), registry_settings)
        try:
            await eventually(lambda: _absent(stub, spec, lw.learnware_id), 10)

            async def converged() -> bool:
                stats = await stub.GetIndexStats(search_pb.GetIndexStatsRequest())
                sync = await health.Check(health_pb2.HealthCheckRequest(service=SYNC_CHECK))
                return (
                    stats.synced
                    and stats.last_sequence == await world.repo.latest_sequence()
                    and sync.status == health_pb2.HealthCheckResponse.SERVING
                )

            await eventually(converged, within_s=10)
        finally:
            await handle.stop(registry_settings)


class _PausingRegistry(registry_service_pb2_grpc.RegistryServiceServicer):
    """A stand-in registry (a real gRPC server) whose replay stops halfway for `pause_s`, as
    a slow database page would, before its end-of-replay marker."""

    def __init__(self, events: list, pause_after: int, pause_s: float) -> None:
        self.events, self.pause_after, self.pause_s = events, pause_after, pause_s

    async def WatchChanges(
        self, request: registry_pb.WatchChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb.WatchChangesResponse]:
        for i, event in enumerate(self.events):
            if i == self.pause_after:
                await asyncio.sleep(self.pause_s)
            if event.sequence > request.since_sequence:
                yield registry_pb.WatchChangesResponse(event=event)
        yield registry_pb.WatchChangesResponse(caught_up=True)
        await asyncio.Event().wait()  # live: no new changes


def _created(sequence: int, spec: RKMESpec) -> object:
    from lwdock.registry.v1 import resources_pb2 as registry_resources_pb2

    learnware_id = f"lw-{sequence:08d}"
    return registry_resources_pb2.ChangeEvent(
        sequence=sequence,
        type=registry_resources_pb2.CHANGE_TYPE_CREATED,
        learnware=f"learnwares/{learnware_id}",
        snapshot=learnware_pb2.Learnware(
            learnware_id=learnware_id,
            state=learnware_pb2.LEARNWARE_STATE_ACTIVE,
            specifications=[learnware_pb2.Specification(name="spec", rkme=rkme_to_proto(spec))],
        ),
    )


async def test_caught_up_only_at_the_end_of_the_replay_marker() -> None:
    """A pause inside the replay is not its end: the follower reports caught up (and the
    index synced) only once it has applied every event before the registry's marker."""
    from grpc_health.v1 import health as health_module

    events = [_created(i + 1, spec_at(float(i), seed=i)) for i in range(4)]
    server = grpc.aio.server()
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        _PausingRegistry(events, pause_after=2, pause_s=4.0), server
    )
    health = health_module.aio.HealthServicer()
    await health.set(REGISTRY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    index = SearchIndex()
    caught_up: list[int] = []

    async def on_caught_up() -> None:
        caught_up.append(index.last_sequence)

    follower = RegistryFollower(index, f"127.0.0.1:{port}", options=FOLLOW)
    follower.on_caught_up = on_caught_up
    follower.start()
    try:
        await eventually(lambda: _async(index.last_sequence == 2), within_s=3)
        await asyncio.sleep(0.6)  # inside the registry's pause (the old rule: 0.3 s quiet)
        assert index.last_sequence == 2 and not index.synced and caught_up == []
        await eventually(lambda: _async(index.synced), within_s=8)
        assert caught_up == [4] and index.learnware_count == 4
    finally:
        await follower.stop()
        await server.stop(None)


async def _async(value: bool) -> bool:
    return value
