"""The registry on an S3 blob store (a real moto server on 127.0.0.1, configured only through
settings: LWDOCK_BLOB_URL=s3://..., LWDOCK_S3_ENDPOINT_URL, credentials from the AWS
environment), and WatchChanges exactness under concurrent writes, including a client that is
cut off mid-stream and resumes from its last sequence."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2

from lwdock.common.v1 import learnware_pb2
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc, resources_pb2
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.settings import Settings
from lwdock.tokens import add_token, new_token
from registry_service.blobs_config import (
    BlobConfigError,
    check_blob_store,
    make_blob_store,
    parse_blob_url,
)
from registry_service.blobstore import LocalBlobStore, S3BlobStore
from registry_service.database import Database
from registry_service.repository import ChangeEventRow, Repository
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import service_settings, wait_serving
from tests.test_registry_service import ZIP, module_db, rezip, upload_requests

__all__ = ["module_db"]  # a fixture, imported for this module

BUCKET = "lwdock-test"
BLOB_URL = f"s3://{BUCKET}/packages"


@dataclass
class S3Registry:
    handle: ServerHandle
    channel: grpc.aio.Channel
    stub: registry_service_pb2_grpc.RegistryServiceStub
    s3: S3BlobStore  # a client of the same bucket, for looking behind the registry's back
    repo: Repository
    tokens: dict[str, str]

    def auth(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[who]}"),)


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials through the standard AWS variables, isolated from the host's."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest_asyncio.fixture(scope="module")
async def s3_registry(
    module_db: str,
    moto_endpoint: str,
    aws_env: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[S3Registry]:
    home = tmp_path_factory.mktemp("registry-s3-home")
    tokens_file = home / "tokens.json"
    tokens = {who: new_token() for who in ("admin", "alice", "bob")}
    add_token(tokens_file, tokens["admin"], "users/admin", "admin")
    add_token(tokens_file, tokens["alice"], "users/alice", "developer")
    add_token(tokens_file, tokens["bob"], "users/bob", "developer")
    settings = service_settings(
        home,
        module_db,
        tokens_file=tokens_file,
        blob_url=BLOB_URL,
        s3_endpoint_url=moto_endpoint,
        s3_region="us-east-1",
    )
    # The bucket, created the way a deployment script would (the registry never creates it).
    s3 = make_blob_store(settings)
    assert isinstance(s3, S3BlobStore)
    await check_blob_store(s3, create_bucket=True)
    await check_blob_store(s3)

    handle = await start(build_app(settings), settings)
    channel = grpc.aio.insecure_channel(handle.address)
    db = Database(module_db)
    await db.pool.open(wait=True)
    try:
        await wait_serving(channel, SERVICE_NAME)
        yield S3Registry(
            handle,
            channel,
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            s3,
            Repository(db.pool),
            tokens,
        )
    finally:
        await channel.close()
        await handle.stop(settings)
        await db.close()
    # Nothing was written to the local directory.
    assert not (home / "blobs").exists() or not any((home / "blobs").rglob("*"))


# ---------------------------------------------------------------------------------------------
# Configuration


def test_blob_url_parsing(tmp_path: Path) -> None:
    assert parse_blob_url("s3://b/packages").prefix == "packages/"
    assert parse_blob_url("s3://b/a/b/").prefix == "a/b/"
    assert parse_blob_url("s3://b").prefix == ""
    assert parse_blob_url("s3://b/").bucket == "b"
    for bad in ("gs://b/x", "file:///tmp/x", "/tmp/blobs", "s3:///x", "s3://k:s@b/x", "s3://b?x"):
        with pytest.raises(BlobConfigError):
            parse_blob_url(bad)
    local = make_blob_store(Settings(home=tmp_path))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "blobs"


def test_bad_blob_url_is_a_startup_error(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, "postgresql://unused/none", blob_url="ftp://x/y")
    with pytest.raises(BlobConfigError, match="unsupported scheme"):
        build_app(settings)


def test_blob_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LWDOCK_BLOB_URL", "s3://from-env/pkgs")
    monkeypatch.setenv("LWDOCK_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LWDOCK_S3_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings()
    assert settings.blob_url == "s3://from-env/pkgs"
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert store.bucket == "from-env" and store.prefix == "pkgs/"
    assert store._client.meta.endpoint_url == "http://127.0.0.1:9"
    assert store._client.meta.region_name == "eu-west-1"


# ---------------------------------------------------------------------------------------------
# Upload and download through S3


async def test_upload_download_through_s3(s3_registry: S3Registry) -> None:
    data = rezip(ZIP, b"s3-roundtrip")
    digest = hashlib.sha256(data).hexdigest()
    created = await s3_registry.stub.CreateLearnware(
        upload_requests(data), metadata=s3_registry.auth("alice")
    )
    assert created.package.sha256 == digest
    assert created.package.size_bytes == len(data)

    call = s3_registry.stub.DownloadLearnware(pb.DownloadLearnwareRequest(name=created.name))
    assert b"".join([reply.chunk async for reply in call]) == data

    # The object is in the moto bucket under <prefix>sha256/<hex>, with exactly these bytes.
    key = f"packages/sha256/{digest}"
    assert s3_registry.s3.key(digest) == key
    head = await asyncio.to_thread(s3_registry.s3._client.head_object, Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["Metadata"]["sha256"] == digest
    obj = await asyncio.to_thread(s3_registry.s3._client.get_object, Bucket=BUCKET, Key=key)
    assert await asyncio.to_thread(obj["Body"].read) == data
    assert await s3_registry.s3.get(digest) == data


# ---------------------------------------------------------------------------------------------
# WatchChanges exactness under concurrent writes


async def all_events(repo: Repository) -> list[ChangeEventRow]:
    events: list[ChangeEventRow] = []
    since = 0
    while batch := await repo.events_since(since, limit=100):
        events.extend(batch)
        since = batch[-1].sequence
    return events


def key_of(event: resources_pb2.ChangeEvent) -> tuple[int, int, str]:
    return (event.sequence, event.type, event.learnware)


def row_key(row: ChangeEventRow) -> tuple[int, int, str]:
    from registry_service.converters import change_event_to_proto

    return key_of(change_event_to_proto(row))


class Watcher:
    """One WatchChanges call on its own channel, pumped into a list."""

    def __init__(self, address: str, since: int, *, stop_after: int | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        stub = registry_service_pb2_grpc.RegistryServiceStub(self.channel)
        self.call = stub.WatchChanges(pb.WatchChangesRequest(since_sequence=since))
        self.events: list[resources_pb2.ChangeEvent] = []
        self.markers = 0  # caught_up responses
        self.stop_after = stop_after
        self.cut = asyncio.Event()
        self.grew = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for reply in self.call:
            if reply.caught_up:  # the end-of-replay marker: no event
                assert not reply.HasField("event")
                self.markers += 1
                continue
            self.events.append(reply.event)
            self.grew.set()
            if self.stop_after is not None and len(self.events) >= self.stop_after:
                self.call.cancel()  # the client is cut off: nothing after this is counted
                self.cut.set()
                return

    async def wait_until(self, sequence: int, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not self.events or self.events[-1].sequence < sequence:
                if self.task.done():
                    self.task.result()  # surfaces a stream error
                    pytest.fail(f"stream ended at {self.events[-1:]} before {sequence}")
                self.grew.clear()
                await self.grew.wait()

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self.task
        await self.channel.close()


async def test_watch_is_exact_under_concurrent_writes_and_reconnects(
    s3_registry: S3Registry,
) -> None:
    reg = s3_registry
    baseline = len(await all_events(reg.repo))
    writers = 10  # each: create, update, delete = 30 writes, interleaved across writers
    cut_after = baseline + 12
    steady = Watcher(reg.handle.address, 0)
    cut = Watcher(reg.handle.address, 0, stop_after=cut_after)
    names: dict[int, str] = {}

    async def writer(i: int) -> None:
        who = "alice" if i % 2 else "bob"
        data = rezip(ZIP, f"watch-{i}-{uuid.uuid4().hex}".encode())
        lw = await reg.stub.CreateLearnware(upload_requests(data), metadata=reg.auth(who))
        names[i] = lw.name
        await asyncio.sleep(0.01 * (i % 3))
        change = learnware_pb2.Learnware(name=lw.name, etag=lw.etag)
        change.semantic_specification.description = f"Description number {i} of this model."
        await reg.stub.UpdateLearnware(
            pb.UpdateLearnwareRequest(
                learnware=change,
                update_mask=field_mask_pb2.FieldMask(paths=["semantic_specification.description"]),
            ),
            metadata=reg.auth(who),
        )
        await reg.stub.DeleteLearnware(
            pb.DeleteLearnwareRequest(name=lw.name), metadata=reg.auth(who)
        )

    resumed: Watcher | None = None
    try:
        writing = asyncio.gather(*(writer(i) for i in range(writers)))
        # The cut-off client reconnects from its last sequence while writes are going on.
        await asyncio.wait_for(cut.cut.wait(), 60)
        assert len(cut.events) == cut_after
        resumed = Watcher(reg.handle.address, cut.events[-1].sequence)
        await asyncio.wait_for(writing, 120)

        expected = await all_events(reg.repo)
        assert len(expected) >= baseline + 3 * writers
        last = expected[-1].sequence
        await steady.wait_until(last)
        await resumed.wait_until(last)
    finally:
        for watcher in (steady, cut, resumed):
            if watcher is not None:
                await watcher.close()

    want = [row_key(row) for row in expected]
    # Events committed after the snapshot (none expected) are left out of the comparison.
    seen_steady = [key_of(e) for e in steady.events if e.sequence <= last]
    seen_cut = [key_of(e) for e in cut.events]
    seen_resumed = [key_of(e) for e in resumed.events if e.sequence <= last]

    # The uninterrupted stream is exactly the repository's list, in order, with one
    # end-of-replay marker.
    assert seen_steady == want
    assert steady.markers == 1
    # Before the cut and after the reconnect: no duplicates, nothing missed, in order.
    assert seen_cut == want[: len(seen_cut)]
    assert seen_cut + seen_resumed == want
    assert not set(seen_cut) & set(seen_resumed)
    sequences = [s for s, _, _ in seen_cut + seen_resumed]
    assert all(a < b for a, b in itertools.pairwise(sequences))

    # Each writer's learnware: CREATED, UPDATED, DELETED, in that order.
    by_name: dict[str, list[int]] = {}
    for _, kind, name in want:
        if kind != resources_pb2.CHANGE_TYPE_STATE_CHANGED:  # a check worker's, if one runs
            by_name.setdefault(name, []).append(kind)
    for i in range(writers):
        assert by_name[names[i]] == [
            resources_pb2.CHANGE_TYPE_CREATED,
            resources_pb2.CHANGE_TYPE_UPDATED,
            resources_pb2.CHANGE_TYPE_DELETED,
        ]
