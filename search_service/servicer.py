"""Thin SearchService servicer: convert, call the index (in a worker thread), convert back."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor

import grpc

from lwdock.registry_client import RegistryClient
from lwdock.search.v1 import resources_pb2, search_service_pb2, search_service_pb2_grpc
from lwdock.server.context import downstream_timeout
from search_service import converters
from search_service.index import SearchIndex


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):
    def __init__(
        self,
        index: SearchIndex,
        sync_error: Callable[[], str] = lambda: "",
        registry: RegistryClient | None = None,
        *,
        executor: Executor | None = None,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        """`executor` runs the searches (None: asyncio's default threads). A search holds
        the GIL for most of its time: a few threads keep the core busy, and more only make
        them contend (the server's `search_threads`)."""
        self.index = index
        self.sync_error = sync_error
        self.registry = registry
        self.executor = executor
        self.worker = worker
        self.workers = workers

    async def SearchLearnwares(
        self,
        request: search_service_pb2.SearchLearnwaresRequest,
        context: grpc.aio.ServicerContext,
    ) -> search_service_pb2.SearchLearnwaresResponse:
        search = converters.search_request(request)
        sequence = self.index.last_sequence
        variables = contextvars.copy_context()  # the request id of the logs, as to_thread
        result = await asyncio.get_running_loop().run_in_executor(
            self.executor, variables.run, self.index.search, search
        )
        response = converters.search_response(result, search, sequence)
        if request.include_learnwares and self.registry is not None and response.single_results:
            found = await self.registry.get_many(
                [hit.learnware_id for hit in response.single_results],
                downstream_timeout(context),
            )
            for hit in response.single_results:
                if hit.learnware_id in found:
                    hit.learnware.CopyFrom(found[hit.learnware_id])
        return response

    async def GetIndexStats(
        self, request: search_service_pb2.GetIndexStatsRequest, context: grpc.aio.ServicerContext
    ) -> search_service_pb2.GetIndexStatsResponse:
        index = self.index
        return search_service_pb2.GetIndexStatsResponse(
            learnware_count=index.learnware_count,
            partitions=[
                resources_pb2.PartitionStats(
                    key=name,
                    learnware_count=p.count,
                    index_type=p.index_type,
                    memory_bytes=p.memory_bytes,
                    memory_bytes_per_learnware=p.memory_bytes // max(p.count, 1),
                )
                for name, p in list(index.partitions.items())
            ],
            last_sequence=index.last_sequence,
            synced=index.synced,
            embedding_dimension=index.embedding_dimension,
            embedding_seed=index.embedding_seed,
            rescore_dimension=index.rescore_dimension,
            sync_lag_seconds=index.sync_lag_s(),
            sync_error="" if index.synced else self.sync_error(),
            worker=self.worker,
            workers=self.workers,
        )
