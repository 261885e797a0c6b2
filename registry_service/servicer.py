"""Thin RegistryService servicer."""

from __future__ import annotations

import grpc

from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc, resources_pb2
from lwdock.semantic import VOCABULARY


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    async def GetSemanticVocabulary(
        self,
        request: registry_service_pb2.GetSemanticVocabularyRequest,
        context: grpc.aio.ServicerContext,
    ) -> registry_service_pb2.GetSemanticVocabularyResponse:
        return registry_service_pb2.GetSemanticVocabularyResponse(
            keys=[
                resources_pb2.SemanticKey(key=k.key, type=k.type, values=k.values)
                for k in VOCABULARY
            ]
        )
