"""Wiring of search_service: the index, its snapshot, the registry follower, health."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from lwdock.registry_client import RegistryClient
from lwdock.search.v1 import search_service_pb2, search_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, ServiceApp
from lwdock.settings import Settings
from search_service import metrics
from search_service.index import SearchIndex
from search_service.servicer import SearchServicer
from search_service.snapshot import load_snapshot
from search_service.sync import FollowerOptions, RegistryFollower

SERVICE_NAME = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
# A second health check: SERVING while the index follows the registry's change feed. The
# service itself stays SERVING (on its last index) when the registry goes away, so replicas
# stay in their endpoints; this check says the index may be stale.
SYNC_CHECK = "lwdock.search.v1.IndexSync"

log = logging.getLogger("lwdock.search")


def build_app(settings: Settings, *, follower_options: FollowerOptions | None = None) -> ServiceApp:
    """NOT_SERVING until the index has caught up with the registry at
    settings.registry_address (after loading the snapshot under the snapshot directory).
    A worker of a group (search_service.workers) other than worker 0 loads the snapshot but
    does not write it."""
    index = SearchIndex(
        embedding_dimension=settings.search_embedding_dimension,
        rescore_dimension=settings.search_rescore_dimension,
    )
    snapshot_dir = settings.resolved_search_snapshot_dir()
    registry = RegistryClient(settings.registry_address, token=settings.service_token)
    worker = settings.search_worker_index or 0
    follower = RegistryFollower(
        index,
        settings.registry_address,
        snapshot_dir=snapshot_dir if worker == 0 else None,
        options=follower_options,
        token=settings.service_token,
    )

    searches = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")

    def register(server: grpc.aio.Server) -> None:
        servicer = SearchServicer(
            index,
            lambda: follower.last_error,
            registry,
            executor=searches,
            worker=worker,
            workers=max(1, settings.search_workers),
        )
        search_service_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server)

    async def on_start(handle: ServerHandle) -> None:
        if load_snapshot(index, snapshot_dir):
            log.info(
                "index loaded from snapshot",
                extra={"last_sequence": index.last_sequence, "learnwares": index.learnware_count},
            )
        metrics.publish(index)

        await handle.set_serving(SYNC_CHECK, False)

        async def caught_up() -> None:
            await handle.set_serving(SERVICE_NAME, True)
            await handle.set_serving(SYNC_CHECK, True)

        async def lost() -> None:
            await handle.set_serving(SYNC_CHECK, False)

        follower.on_caught_up = caught_up
        follower.on_lost = lost
        follower.start()

    async def on_stop() -> None:
        await follower.stop()
        await registry.close()
        searches.shutdown(wait=False)

    return ServiceApp(
        name="search",
        services=[SERVICE_NAME],
        register=register,
        on_start=on_start,
        on_stop=on_stop,
        initially_not_serving={SERVICE_NAME},
        log_fields={} if settings.search_worker_index is None else {"worker": worker},
    )


def one_thread_per_search() -> None:
    """Searches run concurrently, one per worker thread: each one's numpy/BLAS, torch and
    FAISS work stays on its own thread. Their operations are small (a 100 x 512 kernel
    block, a FAISS probe), where a pool of threads per operation costs more to wake than it
    saves, and several requests each fanning out over every core only contend."""
    import faiss
    import threadpoolctl
    import torch

    threadpoolctl.threadpool_limits(1)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
