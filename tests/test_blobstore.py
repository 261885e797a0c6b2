"""The BlobStore contract, run against every implementation (congruence tests): the local
directory store and the S3 store against a real moto server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from lwdock.errors import DataLoss, InvalidArgument, NotFound, OutOfRange, Unavailable
from registry_service.blobstore import (
    BlobDigestMismatch,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    collect_orphans,
)

CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_store(endpoint: str, **kwargs: object) -> S3BlobStore:
    store = S3BlobStore(
        f"lwdock-{uuid.uuid4().hex[:12]}",
        endpoint_url=endpoint,
        **CREDENTIALS,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    store.ensure_bucket()
    return store


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        yield s3_store(request.getfixturevalue("moto_endpoint"))


def corrupt(store: BlobStore, digest: str, data: bytes) -> None:
    """Damage a stored blob behind the store's back."""
    if isinstance(store, LocalBlobStore):
        path = store.path(digest)
        path.chmod(0o644)
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        path.write_bytes(bytes(damaged))
    else:
        assert isinstance(store, S3BlobStore)
        store._client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=data[::-1])


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


# ---------------------------------------------------------------------------------------------


async def test_put_get_roundtrip_and_idempotent(store: BlobStore) -> None:
    data = b"learnware package bytes " * 100
    digest = sha(data)
    assert isinstance(store, BlobStore)
    assert not await store.exists(digest)
    assert await store.stat(digest) is None
    await store.put(digest, data)
    await store.put(digest, data)  # idempotent
    assert await store.exists(digest)
    assert await store.size(digest) == len(data)
    assert await store.get(digest) == data
    info = await store.stat(digest)
    assert info is not None and info.sha256 == digest and info.size == len(data)
    assert [k async for k in store.list_keys()] == [digest]


async def test_sources_bytes_file_path_and_empty(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "package.zip"
    path.write_bytes(data)
    await store.put(sha(data), path)
    assert await store.get(sha(data)) == data

    other = os.urandom(5000)
    await store.put(sha(other), io.BytesIO(other))
    await store.put(sha(other), memoryview(other))
    assert await store.get(sha(other)) == other

    await store.put(sha(b""), b"")
    assert await store.get(sha(b"")) == b""
    assert await collect(store.read(sha(b""))) == []
    assert sorted([k async for k in store.list_keys()]) == sorted([sha(data), sha(other), sha(b"")])


async def test_mismatched_bytes_are_rejected_and_not_stored(store: BlobStore) -> None:
    claimed = sha(b"what the client said")
    for source in (b"something else", io.BytesIO(b"something else")):
        with pytest.raises(BlobDigestMismatch) as info:
            await store.put(claimed, source)
        assert isinstance(info.value, InvalidArgument)
        assert info.value.actual == sha(b"something else")
    assert not await store.exists(claimed)
    assert [k async for k in store.list_keys()] == []
    if isinstance(store, LocalBlobStore):  # no temp file left behind either
        assert os.listdir(store.root / "sha256") == []


async def test_keys_must_be_sha256_hex(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "ABC", sha(b"x").upper(), sha(b"x")[:-1], ""):
        with pytest.raises(InvalidArgument):
            await store.put(bad, b"x")
        with pytest.raises(InvalidArgument):
            await store.get(bad)
        with pytest.raises(InvalidArgument):
            await store.delete(bad)


async def test_missing_blob_is_not_found(store: BlobStore) -> None:
    missing = sha(b"never stored")
    with pytest.raises(NotFound):
        await store.get(missing)
    with pytest.raises(NotFound):
        await store.size(missing)
    with pytest.raises(NotFound):
        await collect(store.read(missing, 10))
    assert await store.delete(missing) is False


@pytest.mark.parametrize("verify", [True, False])
async def test_ranged_streaming_reads(store: BlobStore, verify: bool) -> None:
    data = os.urandom(2_500_000)
    digest = sha(data)
    await store.put(digest, data)
    chunks = await collect(store.read(digest, chunk_size=1 << 20, verify=verify))
    assert b"".join(chunks) == data and len(chunks) == 3
    for offset, length in ((0, 10), (1_000_000, 1_048_577), (2_499_999, None), (7, 0)):
        got = b"".join(
            await collect(store.read(digest, offset, length, chunk_size=65536, verify=verify))
        )
        end = len(data) if length is None else offset + length
        assert got == data[offset:end]
    assert await collect(store.read(digest, len(data), verify=verify)) == []  # at the end: empty
    assert b"".join(await collect(store.read(digest, 100, 10**9, verify=verify))) == data[100:]
    with pytest.raises(OutOfRange):
        await collect(store.read(digest, len(data) + 1, verify=verify))
    with pytest.raises(OutOfRange):
        await collect(store.read(digest, -1, verify=verify))


async def test_corruption_is_data_loss(store: BlobStore) -> None:
    data = os.urandom(200_000)
    digest = sha(data)
    await store.put(digest, data)
    corrupt(store, digest, data)
    with pytest.raises(DataLoss) as info:
        await store.get(digest)
    assert info.value.metadata["resource_name"] == f"sha256/{digest}"
    # A verified stream never ends successfully: the last chunk is held back, then DataLoss.
    received: list[bytes] = []
    with pytest.raises(DataLoss):
        async for chunk in store.read(digest, chunk_size=50_000):
            received.append(chunk)
    assert sum(map(len, received)) < len(data)
    with pytest.raises(DataLoss):
        await collect(store.read(digest, 10, 10))  # a verified range read checks everything
    # Writing the right bytes again repairs it.
    await store.put(digest, data)
    assert await store.get(digest) == data


async def test_truncated_blob_is_data_loss(store: BlobStore) -> None:
    data = os.urandom(10_000)
    digest = sha(data)
    await store.put(digest, data)
    if isinstance(store, LocalBlobStore):
        store.path(digest).chmod(0o644)
        store.path(digest).write_bytes(data[:5000])
    else:
        assert isinstance(store, S3BlobStore)
        store._client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=data[:5000])
    with pytest.raises(DataLoss):
        await store.get(digest)


async def test_delete_and_list(store: BlobStore) -> None:
    blobs = [os.urandom(100 + i) for i in range(5)]
    for blob in blobs:
        await store.put(sha(blob), blob)
    assert sorted([k async for k in store.list_keys()]) == sorted(sha(b) for b in blobs)
    assert await store.delete(sha(blobs[0])) is True
    assert await store.delete(sha(blobs[0])) is False
    assert not await store.exists(sha(blobs[0]))
    infos = [info async for info in store.list_blobs()]
    assert sorted(i.sha256 for i in infos) == sorted(sha(b) for b in blobs[1:])
    assert {i.sha256: i.size for i in infos} == {sha(b): len(b) for b in blobs[1:]}
    assert all(abs(datetime.now(UTC) - i.modified) < timedelta(minutes=5) for i in infos)


async def test_collect_orphans(store: BlobStore) -> None:
    blobs = [os.urandom(64) for _ in range(4)]
    for blob in blobs:
        await store.put(sha(blob), blob)
    referenced = {sha(blobs[0]), sha(blobs[1]), sha(b"referenced but not stored")}
    # Young blobs may belong to an upload whose row is not committed yet: kept.
    assert await collect_orphans(store, referenced, older_than_s=3600) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    orphans = sorted([sha(blobs[2]), sha(blobs[3])])
    dry = await collect_orphans(store, referenced, older_than_s=3600, now=later, dry_run=True)
    assert sorted(dry) == orphans
    assert len([k async for k in store.list_keys()]) == 4
    deleted = await collect_orphans(store, referenced, older_than_s=3600, now=later)
    assert sorted(deleted) == orphans
    assert sorted([k async for k in store.list_keys()]) == sorted([sha(blobs[0]), sha(blobs[1])])


async def test_stores_are_congruent(tmp_path: Path, moto_endpoint: str) -> None:
    """The same operations give the same observable results on every implementation."""
    stores: list[BlobStore] = [LocalBlobStore(tmp_path / "local"), s3_store(moto_endpoint)]
    payloads = [os.urandom(n) for n in (0, 1, 4096, 100_001)]

    async def script(store: BlobStore) -> list[object]:
        out: list[object] = []
        for payload in payloads:
            await store.put(sha(payload), payload)
        out.append(sorted([k async for k in store.list_keys()]))
        for payload in payloads:
            digest = sha(payload)
            out.append(await store.size(digest))
            out.append(await store.get(digest))
            offset = min(1, len(payload))
            out.append(b"".join(await collect(store.read(digest, offset, 4000, chunk_size=333))))
        out.append(await store.delete(sha(payloads[1])))
        out.append(await store.delete(sha(payloads[1])))
        try:
            await store.get(sha(payloads[1]))
        except NotFound as exc:
            out.append(type(exc).__name__)
        out.append(sorted([k async for k in store.list_keys()]))
        return out

    results = [await script(s) for s in stores]
    assert results[0] == results[1]


async def test_local_store_files_are_read_only_and_temp_files_cleaned(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"x" * 1000
    await store.put(sha(data), data)
    assert store.path(sha(data)) == tmp_path / "sha256" / sha(data)
    assert store.path(sha(data)).stat().st_mode & 0o777 == 0o444
    stale = tmp_path / "sha256" / ".tmp-crashed"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    assert [k async for k in store.list_keys()] == [sha(data)]
    assert store.remove_stale_temp_files(older_than_s=60) == 1
    assert not stale.exists()


async def test_s3_store_unreachable_is_unavailable() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3BlobStore(
        "nowhere",
        endpoint_url=f"http://127.0.0.1:{port}",
        **CREDENTIALS,  # type: ignore[arg-type]
    )
    with pytest.raises(Unavailable):
        await store.exists(sha(b"x"))
    with pytest.raises(Unavailable):
        await store.put(sha(b"x"), b"x")


async def test_s3_multipart_upload(moto_endpoint: str) -> None:
    store = s3_store(moto_endpoint, multipart_threshold=5 * 1024 * 1024)
    data = os.urandom(11 * 1024 * 1024)
    await store.put(sha(data), io.BytesIO(data))
    assert await store.size(sha(data)) == len(data)
    assert await store.get(sha(data)) == data
