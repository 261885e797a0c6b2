"""Thin SearchService servicer."""

from __future__ import annotations

import grpc

from lwdock.search.v1 import resources_pb2, search_service_pb2, search_service_pb2_grpc
from search_service.index import SearchIndex


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):
    def __init__(self, index: SearchIndex) -> None:
        self.index = index

    async def GetIndexStats(
        self, request: search_service_pb2.GetIndexStatsRequest, context: grpc.aio.ServicerContext
    ) -> search_service_pb2.GetIndexStatsResponse:
        index = self.index
        return search_service_pb2.GetIndexStatsResponse(
            learnware_count=index.learnware_count,
            partitions=[
                resources_pb2.PartitionStats(
                    key=p.key,
                    learnware_count=len(p.learnware_ids),
                    index_type=p.index_type,
                    memory_bytes=p.memory_bytes,
                )
                for p in index.partitions.values()
            ],
            last_sequence=index.last_sequence,
            synced=index.synced,
            embedding_dimension=index.embedding_dimension,
            embedding_seed=index.embedding_seed,
        )
