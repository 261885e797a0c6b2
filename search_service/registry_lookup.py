"""The learnwares behind search results, read from the registry (`include_learnwares`).

The index keeps only what ranking needs; a caller asking for the learnwares themselves gets
them from the registry, the source of truth, within the caller's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from lwdock.channels import aio_channel
from lwdock.common.v1 import learnware_pb2
from lwdock.errors import Unavailable
from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc


class RegistryLookup:
    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        self.token = token
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> registry_service_pb2_grpc.RegistryServiceStub:
        if self._channel is None:
            self._channel = aio_channel(self.address, token=self.token)
        return registry_service_pb2_grpc.RegistryServiceStub(self._channel)

    async def get_many(
        self, learnware_ids: Sequence[str], timeout_s: float
    ) -> dict[str, learnware_pb2.Learnware]:
        """The learnwares by id; one deleted since it was indexed is left out. Raises
        Unavailable when the registry cannot answer within `timeout_s`."""
        stub = self._stub()

        async def one(learnware_id: str) -> learnware_pb2.Learnware | None:
            request = registry_service_pb2.GetLearnwareRequest(name=f"learnwares/{learnware_id}")
            try:
                return await stub.GetLearnware(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise Unavailable(
                    f"the registry could not return the learnwares: {exc.code().name}: "
                    f"{exc.details()}"
                ) from exc

        found = await asyncio.gather(*(one(i) for i in dict.fromkeys(learnware_ids)))
        return {lw.learnware_id: lw for lw in found if lw is not None}

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
