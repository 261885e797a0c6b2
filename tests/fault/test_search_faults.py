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

import urllib.request

import grpc

from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import search_service_pb2_grpc
from registry_service.repository import Repository, State
from search_service.server import SERVICE_NAME as SEARCH
from tests.fault.search_world import Child, World, serving, stats, wait_for
from tests.test_search_service import spec_at, stat_request


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
