"""What services ask the registry: learnwares (their state and semantic; reuse_service, and
search_service for `include_learnwares`) and packages (reuse_service: DownloadLearnware,
checked against the sha256 trailer and the learnware's own sha256)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import grpc

from lwdock.channels import aio_channel
from lwdock.common.v1 import learnware_pb2
from lwdock.errors import DataLoss, LwdockError, NotFound, Unavailable
from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from lwdock.server.status import from_rpc_error

SHA256_TRAILER = "x-lwdock-sha256"


def learnware_name(value: str) -> str:
    return value if value.startswith("learnwares/") else f"learnwares/{value}"


def _domain_error(exc: grpc.aio.AioRpcError) -> LwdockError:
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the registry did not answer: {exc.details()}")
    return from_rpc_error(exc)


class RegistryClient:
    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        self.token = token
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> registry_service_pb2_grpc.RegistryServiceStub:
        if self._channel is None:
            self._channel = aio_channel(self.address, token=self.token)
        return registry_service_pb2_grpc.RegistryServiceStub(self._channel)

    async def get(self, name: str, timeout_s: float) -> learnware_pb2.Learnware:
        request = registry_service_pb2.GetLearnwareRequest(name=learnware_name(name))
        try:
            return await self._stub().GetLearnware(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _domain_error(exc) from None

    async def get_many(
        self, names: Sequence[str], timeout_s: float
    ) -> dict[str, learnware_pb2.Learnware]:
        """The learnwares (by name or id), keyed by learnware id, fetched concurrently; one
        deleted meanwhile is left out."""

        async def one(name: str) -> learnware_pb2.Learnware | None:
            try:
                return await self.get(name, timeout_s)
            except NotFound:
                return None

        found = await asyncio.gather(*(one(n) for n in dict.fromkeys(names)))
        return {lw.learnware_id: lw for lw in found if lw is not None}

    async def download(self, learnware: learnware_pb2.Learnware, timeout_s: float) -> bytes:
        request = registry_service_pb2.DownloadLearnwareRequest(name=learnware.name)
        call = self._stub().DownloadLearnware(request, timeout=timeout_s)
        parts = []
        try:
            async for response in call:
                parts.append(response.chunk)
            # The registry sends the sha256 in both; trailers may be rewritten on the way.
            trailer = dict(await call.initial_metadata() or ())
            trailer.update(dict(await call.trailing_metadata() or ()))
        except grpc.aio.AioRpcError as exc:
            raise _domain_error(exc) from None
        data = b"".join(parts)
        actual = hashlib.sha256(data).hexdigest()
        expected = {str(trailer.get(SHA256_TRAILER, actual)), learnware.package.sha256 or actual}
        if expected != {actual}:
            raise DataLoss(f"package of {learnware.name} arrived corrupted (sha256 mismatch)")
        return data

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
