"""search_service with LWDOCK_SEARCH_WORKERS = 2: a supervisor and two worker processes on one
port (SO_REUSEPORT), against a real registry in a child process (tests/fault's world).

- Connections are spread over both workers; each follows the registry on its own and
  answers the same searches with the same results; a change reaches both.
- A worker killed by SIGKILL is started again by the supervisor, loads the snapshot worker 0
  wrote and catches up; SIGTERM stops the supervisor and every worker, exit status 0.
- Workers that cannot start (a bad setting) stop the group with exit status 1; a port held
  by another server is refused by the supervisor at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import grpc

from lwdock.search.v1 import search_service_pb2 as search_pb
from lwdock.search.v1 import search_service_pb2_grpc
from tests.fault.search_world import Child, World, wait_for
from tests.test_search_service import spec_at, stat_request


def workers_child(world: World, home_name: str, **env: str) -> Child:
    child = world.search(world.home / home_name)
    child.env.update({"LWDOCK_SEARCH_WORKERS": "2", "LWDOCK_METRICS_PORT": "0", **env})
    return child


@contextlib.asynccontextmanager
async def channels_by_worker(
    address: str, workers: int
) -> AsyncIterator[dict[int, search_service_pb2_grpc.SearchServiceStub]]:
    """One channel to each worker: separate connections (a local subchannel pool each) are
    opened until every worker has answered on one."""
    found: dict[int, grpc.aio.Channel] = {}
    opened: list[grpc.aio.Channel] = []
    try:
        for _ in range(64):
            channel = grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            opened.append(channel)
            stub = search_service_pb2_grpc.SearchServiceStub(channel)
            reply = await stub.GetIndexStats(search_pb.GetIndexStatsRequest(), timeout=10)
            assert reply.workers == workers
            found.setdefault(reply.worker, channel)
            if len(found) == workers:
                break
        assert sorted(found) == list(range(workers)), f"workers reached: {sorted(found)}"
        yield {i: search_service_pb2_grpc.SearchServiceStub(c) for i, c in found.items()}
    finally:
        for channel in opened:
            await channel.close()


async def all_synced(address: str, count: int) -> bool:
    """Both workers listen (the first "listening" line is one worker's) and hold `count`."""
    try:
        async with channels_by_worker(address, 2) as stubs:
            for stub in stubs.values():
                reply = await stub.GetIndexStats(search_pb.GetIndexStatsRequest(), timeout=5)
                if not reply.synced or reply.learnware_count != count:
                    return False
    except (AssertionError, grpc.aio.AioRpcError):
        return False
    return True


def worker_pids(child: Child, index: int) -> list[int]:
    return [
        int(line["pid"])  # type: ignore[call-overload]
        for line in child.logged("search worker started")
        if line.get("worker") == index
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_port_follow_the_registry_and_restart(world: World) -> None:
    ids = [await world.upload_active(spec_at(float(i), i), f"model {i}") for i in range(3)]
    search = workers_child(world, "search-workers")
    await search.start()
    await wait_for(lambda: all_synced(search.address, 3), 60)

    # Both workers answer the same search with the same results.
    query = stat_request(spec_at(1.0, 99), page_size=3, max_mixture=3)
    async with channels_by_worker(search.address, 2) as stubs:
        replies = [await stub.SearchLearnwares(query, timeout=10) for stub in stubs.values()]
    assert replies[0].single_results[0].learnware_id == ids[1]
    assert replies[0] == replies[1]

    # A change reaches both.
    ids.append(await world.upload_active(spec_at(5.0, 5), "model 5"))
    await wait_for(lambda: all_synced(search.address, 4), 30)

    # Worker 1 killed: the supervisor starts it again; it loads worker 0's snapshot.
    (first_pid,) = worker_pids(search, 1)
    os.kill(first_pid, signal.SIGKILL)
    await wait_for(lambda: asyncio.sleep(0, len(worker_pids(search, 1)) == 2), 30)
    await wait_for(lambda: all_synced(search.address, 4), 60)
    exits = search.logged("search worker exited")
    assert [(e["worker"], e["exit_code"]) for e in exits] == [(1, -signal.SIGKILL)]
    loaded = [line.get("worker") for line in search.logged("index loaded from snapshot")]
    assert 1 in loaded
    writers = {line.get("worker") for line in search.logged("snapshot written")}
    assert writers == {0}

    # SIGTERM: every worker stops gracefully, then the supervisor, with status 0.
    pids = worker_pids(search, 0) + worker_pids(search, 1)[1:]
    assert search.process is not None
    search.process.terminate()
    assert await asyncio.wait_for(search.process.wait(), 20) == 0
    assert not [pid for pid in pids if alive(pid)]
    assert search.logged("search workers stopped")


async def test_workers_stop_when_the_supervisor_is_killed(world: World) -> None:
    """SIGKILL to the supervisor (no chance to stop its workers): the workers get the
    parent-death signal and shut down, leaving nobody on the port."""
    search = workers_child(world, "search-orphans")
    await search.start()
    await wait_for(lambda: all_synced(search.address, 0), 60)
    pids = worker_pids(search, 0) + worker_pids(search, 1)
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    assert search.process is not None
    search.process.send_signal(signal.SIGKILL)

    async def workers_gone() -> bool:
        return not any(alive(pid) for pid in pids)

    await wait_for(workers_gone, 20)
    assert len(search.logged("stopped")) == 2  # each shut down gracefully


async def test_workers_that_cannot_start_stop_the_group(world: World) -> None:
    # An embedding dimension of 0 is refused when a worker builds its index.
    search = workers_child(world, "search-bad", LWDOCK_SEARCH_EMBEDDING_DIMENSION="0")
    search.process = await asyncio.create_subprocess_exec(
        *search.argv, env=search.env, stderr=asyncio.subprocess.PIPE
    )
    assert search.process.stderr is not None
    async for raw in search.process.stderr:
        search._keep(raw)
    assert await asyncio.wait_for(search.process.wait(), 90) == 1
    assert search.logged("search worker keeps exiting at start; stopping")
    assert not search.logged("listening")


async def test_a_port_held_by_another_server_is_refused() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")},
            "LWDOCK_SEARCH_WORKERS": "2",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "search_service",
            "--port",
            str(port),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"cannot bind the port" in err
    assert b"search worker started" not in err


async def test_worker_and_thread_counts_below_one_are_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")}
    for flags, extra, message in (
        (["--workers", "0"], {}, b"--workers / LWDOCK_SEARCH_WORKERS must be at least 1"),
        ([], {"LWDOCK_SEARCH_THREADS": "0"}, b"LWDOCK_SEARCH_THREADS must be at least 1"),
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "search_service",
            *flags,
            env={**env, **extra},
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 2 and message in err
