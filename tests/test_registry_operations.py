"""Registry housekeeping and limits: orphan blobs are collected; the package size limit is
configurable."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.server.bootstrap import start
from lwdock.tokens import add_token, new_token
from registry_service.blobstore import LocalBlobStore
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import service_settings, wait_serving
from tests.test_registry_service import ZIP, upload_requests


async def test_size_limit_and_orphan_collection(database_url: str, tmp_path: Path) -> None:
    token = new_token()
    add_token(tmp_path / "tokens.json", token, "users/alice", "developer")
    with scratch_database(database_url, "lwdock_orphans") as url:
        settings = service_settings(
            tmp_path,
            url,
            tokens_file=tmp_path / "tokens.json",
            blob_dir=tmp_path / "blobs",
            max_package_bytes=len(ZIP),
        )
        handle = await start(build_app(settings, orphan_interval_s=0.2, orphan_age_s=0.0), settings)
        try:
            async with grpc.aio.insecure_channel(handle.address) as channel:
                await wait_serving(channel, SERVICE_NAME)
                stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
                # One byte over the configured limit: refused before anything is read.
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.CreateLearnware(
                        iter(upload_requests(ZIP + b"\0")),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=30,
                    )
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await stub.CreateLearnware(
                    iter(upload_requests(ZIP)),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=30,
                )
            store = LocalBlobStore(tmp_path / "blobs")
            orphan = b"left behind by an upload that never committed"
            orphan_sha = hashlib.sha256(orphan).hexdigest()
            await store.put(orphan_sha, orphan)
            for _ in range(100):
                if not await store.exists(orphan_sha):
                    break
                await asyncio.sleep(0.1)
            assert not await store.exists(orphan_sha), "the orphan blob was not collected"
            assert await store.exists(hashlib.sha256(ZIP).hexdigest())
        finally:
            await handle.stop(settings)
