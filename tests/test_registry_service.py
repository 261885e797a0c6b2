"""RegistryService over gRPC: a real registry server per module, its own fresh PostgreSQL
database and a LocalBlobStore in a temp dir; the reference fixture package uploaded unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from lwdock.common.v1 import learnware_pb2
from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc, resources_pb2
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.tensors import to_numpy
from lwdock.tokens import add_token, new_token
from lwdock.uploads import create_learnware_requests, rezip
from registry_service.blobstore import LocalBlobStore
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import FIXTURES, service_settings, wait_serving

ZIP = (FIXTURES / "learnware_digits_svc.zip").read_bytes()
SEMANTIC_JSON = (FIXTURES / "learnware_digits_svc.semantic.json").read_text()
CHUNK = 256 * 1024


@dataclass
class Registry:
    handle: ServerHandle
    stub: registry_service_pb2_grpc.RegistryServiceStub
    blobs: LocalBlobStore
    tokens: dict[str, str]

    def auth(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[who]}"),)


@pytest.fixture(scope="module")
def module_db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "lwdock_rs") as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def registry(
    module_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Registry]:
    home = tmp_path_factory.mktemp("registry-home")
    tokens_file = home / "tokens.json"
    tokens = {who: new_token() for who in ("admin", "alice", "bob", "reader")}
    add_token(tokens_file, tokens["admin"], "users/admin", "admin")
    add_token(tokens_file, tokens["alice"], "users/alice", "developer")
    add_token(tokens_file, tokens["bob"], "users/bob", "developer")
    add_token(tokens_file, tokens["reader"], "users/reader", "reader")
    settings = service_settings(home, module_db, tokens_file=tokens_file, blob_dir=home / "blobs")
    handle = await start(build_app(settings), settings)
    channel = grpc.aio.insecure_channel(handle.address)
    try:
        await wait_serving(channel, SERVICE_NAME)
        yield Registry(
            handle,
            registry_service_pb2_grpc.RegistryServiceStub(channel),
            LocalBlobStore(home / "blobs"),
            tokens,
        )
    finally:
        await channel.close()
        await handle.stop(settings)


def upload_requests(
    data: bytes,
    *,
    request_id: str = "",
    sha256: str | None = None,
    size: int | None = None,
    semantic_json: str = SEMANTIC_JSON,
) -> list[pb.CreateLearnwareRequest]:
    return create_learnware_requests(
        data,
        semantic_json=semantic_json,
        request_id=request_id,
        sha256=sha256,
        size=size,
        chunk_bytes=CHUNK,
    )


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def create(reg: Registry, who: str = "alice", **kwargs: object) -> learnware_pb2.Learnware:
    data = kwargs.pop("data", ZIP)
    return await reg.stub.CreateLearnware(
        upload_requests(data, **kwargs),  # type: ignore[arg-type]
        metadata=reg.auth(who),
    )


async def total(reg: Registry) -> int:
    reply = await reg.stub.ListLearnwares(pb.ListLearnwaresRequest(), metadata=reg.auth("admin"))
    return reply.total_size


# ---------------------------------------------------------------------------------------------
# CreateLearnware, Get, List


async def test_upload_get_list_and_idempotency(registry: Registry) -> None:
    request_id = str(uuid.uuid4())
    created = await create(registry, request_id=request_id)
    assert created.state == learnware_pb2.LEARNWARE_STATE_PENDING
    assert created.name == f"learnwares/{created.learnware_id}"
    assert created.owner == "users/alice"
    assert created.package.sha256 == hashlib.sha256(ZIP).hexdigest()
    assert created.package.size_bytes == len(ZIP)
    assert created.semantic_specification.data_type == "Table"
    assert created.semantic_specification.input.dimension == 64
    assert [s.file_name for s in created.specifications] == ["stat_spec.json"]
    assert created.etag and created.create_time.seconds > 0

    got = await registry.stub.GetLearnware(pb.GetLearnwareRequest(name=created.name))
    assert got == created

    listed = await registry.stub.ListLearnwares(pb.ListLearnwaresRequest())
    assert [lw.name for lw in listed.learnwares] == [created.name]
    assert listed.total_size == 1 and listed.next_page_token == ""

    filtered = await registry.stub.ListLearnwares(
        pb.ListLearnwaresRequest(filter='state = PENDING AND data_type = "Table"')
    )
    assert [lw.name for lw in filtered.learnwares] == [created.name]
    none = await registry.stub.ListLearnwares(pb.ListLearnwaresRequest(filter="state = ACTIVE"))
    assert list(none.learnwares) == []

    again = await create(registry, request_id=request_id)
    assert again.learnware_id == created.learnware_id

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, request_id=str(uuid.uuid4()))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await total(registry) == 1


async def test_get_bad_and_unknown_names(registry: Registry) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetLearnware(pb.GetLearnwareRequest(name="lw-1"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value) == ["name"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetLearnware(pb.GetLearnwareRequest(name="learnwares/lw-99999999"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "text", ["colour = red", "state = MAYBE", "state ~ ACTIVE", 'owner = "a" OR task = "b"']
)
async def test_list_bad_filter(registry: Registry, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ListLearnwares(pb.ListLearnwaresRequest(filter=text))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value) == ["filter"]


async def test_wrong_sha256_stores_nothing(registry: Registry) -> None:
    data = rezip(ZIP, b"wrong-sha")
    actual = hashlib.sha256(data).hexdigest()
    before = await total(registry)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=data, sha256="0" * 64)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value) == ["header.sha256"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=data, size=len(data) + 1)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value) == ["header.size_bytes"]
    assert await total(registry) == before
    assert not await registry.blobs.exists(actual)


async def test_too_large_is_resource_exhausted(registry: Registry) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=b"x", size=513 * 1024**2)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_hostile_zip_is_refused(registry: Registry) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf, zipfile.ZipFile(io.BytesIO(ZIP)) as src:
        for info in src.infolist():
            zf.writestr(info, src.read(info))
        zf.writestr("../evil", b"owned")
    data = out.getvalue()
    before = await total(registry)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=data)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value)
    assert await total(registry) == before
    assert not await registry.blobs.exists(hashlib.sha256(data).hexdigest())


async def test_bad_semantic_is_refused(registry: Registry) -> None:
    semantic = json.loads(SEMANTIC_JSON)
    semantic["Task"]["Values"] = ["Juggling"]
    data = rezip(ZIP, b"bad-semantic")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=data, semantic_json=json.dumps(semantic))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, data=data, semantic_json="{not json")
    assert violations(exc.value) == ["header.semantic_specification_json"]


async def test_many_violations_still_arrive_as_invalid_argument(registry: Registry) -> None:
    # Input.Dimension 10 against the 64-feature package: one violation per stray feature
    # description and more; the status must stay small enough to reach the client.
    semantic = json.loads(SEMANTIC_JSON)
    semantic["Input"]["Dimension"] = 10
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(
            registry, data=rezip(ZIP, b"many-violations"), semantic_json=json.dumps(semantic)
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violations(exc.value)
    assert "semantic_specification.input.descriptions[10]" in fields
    assert fields[-1] == "..."  # 54 stray descriptions and more: the rest are counted
    assert len(exc.value.details()) <= 2000


async def test_anonymous_and_reader_may_not_upload(registry: Registry) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.CreateLearnware(upload_requests(ZIP))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await create(registry, who="reader")
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------------------------
# Download, GetSpecification


async def _the_learnware(reg: Registry) -> learnware_pb2.Learnware:
    listed = await reg.stub.ListLearnwares(
        pb.ListLearnwaresRequest(filter='owner = "users/alice"', order_by="create_time")
    )
    if listed.learnwares:
        return listed.learnwares[0]
    return await create(reg)


async def test_download(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    call = registry.stub.DownloadLearnware(pb.DownloadLearnwareRequest(name=lw.name))
    chunks = [reply async for reply in call]
    assert b"".join(c.chunk for c in chunks) == ZIP
    assert all(len(c.chunk) <= 1024**2 for c in chunks)
    initial = dict(await call.initial_metadata())
    assert initial["x-lwdock-sha256"] == hashlib.sha256(ZIP).hexdigest()

    call = registry.stub.DownloadLearnware(
        pb.DownloadLearnwareRequest(name=lw.name, read_offset=1000, read_limit=5000)
    )
    chunks = [reply async for reply in call]
    assert b"".join(c.chunk for c in chunks) == ZIP[1000:6000]
    assert chunks[0].offset == 1000

    call = registry.stub.DownloadLearnware(
        pb.DownloadLearnwareRequest(name=lw.name, read_offset=len(ZIP) + 1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        _ = [reply async for reply in call]
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_download_sha256_trailer(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    call = registry.stub.DownloadLearnware(pb.DownloadLearnwareRequest(name=lw.name))
    _ = [reply async for reply in call]
    trailing = dict(await call.trailing_metadata())
    assert trailing["x-lwdock-sha256"] == hashlib.sha256(ZIP).hexdigest()


async def test_get_specification(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    (summary,) = lw.specifications
    assert summary.name == f"{lw.name}/specifications/stat_spec.json"
    assert not summary.rkme.HasField("z")
    spec = await registry.stub.GetSpecification(pb.GetSpecificationRequest(name=summary.name))
    assert spec.file_name == "stat_spec.json"
    z = to_numpy(spec.rkme.z)
    assert z.shape == (100, 64)
    assert len(spec.rkme.beta) == 100
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetSpecification(
            pb.GetSpecificationRequest(name=f"{lw.name}/specifications/nope.json")
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------------------------
# Update, CheckReport, Watch, Delete


async def test_update_learnware(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    change = learnware_pb2.Learnware(name=lw.name, etag=lw.etag)
    change.semantic_specification.description = "A new description of this digits model."
    mask = field_mask_pb2.FieldMask(paths=["semantic_specification.description"])
    request = pb.UpdateLearnwareRequest(learnware=change, update_mask=mask)

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.UpdateLearnware(request, metadata=registry.auth("bob"))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED

    updated = await registry.stub.UpdateLearnware(request, metadata=registry.auth("alice"))
    assert updated.semantic_specification.description == change.semantic_specification.description
    assert updated.semantic_specification.name == lw.semantic_specification.name
    assert updated.etag != lw.etag

    with pytest.raises(grpc.aio.AioRpcError) as exc:  # the old etag is stale now
        await registry.stub.UpdateLearnware(request, metadata=registry.auth("alice"))
    assert exc.value.code() == grpc.StatusCode.ABORTED

    bad = pb.UpdateLearnwareRequest(
        learnware=learnware_pb2.Learnware(name=lw.name),
        update_mask=field_mask_pb2.FieldMask(paths=["owner"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.UpdateLearnware(bad, metadata=registry.auth("alice"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(exc.value) == ["update_mask"]


async def test_check_report_not_found_before_check(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetCheckReport(pb.GetCheckReportRequest(name=f"{lw.name}/checkReport"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_replays_then_follows(registry: Registry) -> None:
    lw = await _the_learnware(registry)
    call = registry.stub.WatchChanges(pb.WatchChangesRequest(since_sequence=0))
    queue: asyncio.Queue[pb.WatchChangesResponse] = asyncio.Queue()

    async def pump() -> None:
        async for reply in call:
            await queue.put(reply)

    pumping = asyncio.create_task(pump())
    try:
        first = await asyncio.wait_for(queue.get(), 10)
        assert first.event.type == resources_pb2.CHANGE_TYPE_CREATED
        assert first.event.learnware == lw.name
        assert first.event.snapshot.learnware_id == lw.learnware_id
        assert to_numpy(first.event.snapshot.specifications[0].rkme.z).shape == (100, 64)
        last = first.event.sequence
        # The replay ends with one caught_up response (no event), then a live change arrives.
        while not (reply := await asyncio.wait_for(queue.get(), 10)).caught_up:
            assert reply.event.sequence > last
            last = reply.event.sequence
        assert not reply.HasField("event")
        data = rezip(ZIP, b"watched")
        created = await create(registry, who="bob", data=data)
        live = await asyncio.wait_for(queue.get(), 10)
        assert not live.caught_up and live.event.sequence > last
        assert live.event.type == resources_pb2.CHANGE_TYPE_CREATED
        assert live.event.learnware == created.name
    finally:
        call.cancel()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await pumping

    # Delete: other developer refused, owner allowed; then NOT_FOUND.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.DeleteLearnware(
            pb.DeleteLearnwareRequest(name=created.name), metadata=registry.auth("alice")
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await registry.stub.DeleteLearnware(
        pb.DeleteLearnwareRequest(name=created.name), metadata=registry.auth("bob")
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetLearnware(pb.GetLearnwareRequest(name=created.name))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------------------------------------
# Tokens


async def test_tokens(registry: Registry) -> None:
    request = pb.CreateTokenRequest(
        principal="users/carol", role=resources_pb2.ROLE_DEVELOPER, display_name="ci"
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.CreateToken(request, metadata=registry.auth("alice"))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.CreateToken(request)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED

    reply = await registry.stub.CreateToken(request, metadata=registry.auth("admin"))
    assert reply.secret.startswith("lwd_")
    assert reply.token.principal == "users/carol"
    assert reply.token.role == resources_pb2.ROLE_DEVELOPER
    assert reply.token.name.startswith("tokens/")

    listed = await registry.stub.ListTokens(pb.ListTokensRequest(), metadata=registry.auth("admin"))
    assert [t.name for t in listed.tokens] == [reply.token.name]
    own = await registry.stub.ListTokens(pb.ListTokensRequest(), metadata=registry.auth("alice"))
    assert list(own.tokens) == []

    await registry.stub.DeleteToken(
        pb.DeleteTokenRequest(name=reply.token.name), metadata=registry.auth("admin")
    )
    listed = await registry.stub.ListTokens(pb.ListTokensRequest(), metadata=registry.auth("admin"))
    assert list(listed.tokens) == []


async def test_vocabulary(registry: Registry) -> None:
    reply = await registry.stub.GetSemanticVocabulary(pb.GetSemanticVocabularyRequest())
    assert "Data" in [k.key for k in reply.keys]


async def test_unreachable_database_is_not_serving_and_unavailable(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=1"
    settings = service_settings(tmp_path, url, blob_dir=tmp_path / "blobs")
    handle = await start(build_app(settings), settings)
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            await asyncio.sleep(0.5)
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.GetLearnware(pb.GetLearnwareRequest(name="learnwares/lw-00000001"))
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.stop(settings)


# ---------------------------------------------------------------------------------------------
# ReplaceLearnwarePackage, GetUploadStatus, interrupted uploads


def replace_requests(
    name: str,
    data: bytes,
    *,
    request_id: str = "",
    etag: str = "",
    sha256: str | None = None,
) -> list[pb.ReplaceLearnwarePackageRequest]:
    header = pb.ReplacePackageHeader(
        name=name,
        request_id=request_id,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        etag=etag,
    )
    messages = [pb.ReplaceLearnwarePackageRequest(header=header)]
    for start_at in range(0, len(data), CHUNK):
        messages.append(pb.ReplaceLearnwarePackageRequest(chunk=data[start_at : start_at + CHUNK]))
    return messages


async def test_replace_package(registry: Registry) -> None:
    lw = await create(registry, data=rezip(ZIP, b"replace-original"))
    new = rezip(ZIP, b"replace-new")
    new_sha = hashlib.sha256(new).hexdigest()

    for who, code in (("bob", "PERMISSION_DENIED"), ("reader", "PERMISSION_DENIED")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await registry.stub.ReplaceLearnwarePackage(
                replace_requests(lw.name, new), metadata=registry.auth(who)
            )
        assert exc.value.code().name == code
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(replace_requests(lw.name, new))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # wrong sha256: nothing stored
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests(lw.name, new, sha256="0" * 64), metadata=registry.auth("alice")
        )
    assert violations(exc.value) == ["header.sha256"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests(lw.name, new, etag="stale"), metadata=registry.auth("alice")
        )
    assert exc.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests("learnwares/lw-99999999", new), metadata=registry.auth("alice")
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests("lw-1", new), metadata=registry.auth("alice")
        )
    assert violations(exc.value) == ["header.name"]
    assert not await registry.blobs.exists(new_sha)

    request_id = str(uuid.uuid4())
    replaced = await registry.stub.ReplaceLearnwarePackage(
        replace_requests(lw.name, new, request_id=request_id, etag=lw.etag),
        metadata=registry.auth("alice"),
    )
    assert replaced.learnware_id == lw.learnware_id
    assert replaced.state == learnware_pb2.LEARNWARE_STATE_PENDING
    assert replaced.package.sha256 == new_sha and replaced.package.size_bytes == len(new)
    assert replaced.etag != lw.etag
    assert [s.file_name for s in replaced.specifications] == ["stat_spec.json"]
    assert replaced.semantic_specification == lw.semantic_specification
    assert await registry.blobs.exists(new_sha)
    call = registry.stub.DownloadLearnware(pb.DownloadLearnwareRequest(name=lw.name))
    assert b"".join([reply.chunk async for reply in call]) == new

    # A retry with the same request_id answers as the first time; another package refused.
    again = await registry.stub.ReplaceLearnwarePackage(
        replace_requests(lw.name, new, request_id=request_id), metadata=registry.auth("alice")
    )
    assert again.package.sha256 == new_sha
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests(lw.name, rezip(ZIP, b"other"), request_id=request_id),
            metadata=registry.auth("alice"),
        )
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS

    status = await registry.stub.GetUploadStatus(
        pb.GetUploadStatusRequest(request_id=request_id), metadata=registry.auth("alice")
    )
    assert status.complete and status.committed_size == len(new)
    assert status.learnware == lw.name

    # An admin may replace anyone's package; validation is against the stored semantic.
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("README.md", b"no learnware here")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.ReplaceLearnwarePackage(
            replace_requests(lw.name, bad.getvalue()), metadata=registry.auth("admin")
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    by_admin = await registry.stub.ReplaceLearnwarePackage(
        replace_requests(lw.name, rezip(ZIP, b"by-admin")), metadata=registry.auth("admin")
    )
    assert by_admin.owner == "users/alice"


async def test_upload_status(registry: Registry) -> None:
    request_id = str(uuid.uuid4())
    data = rezip(ZIP, b"upload-status")
    created = await create(registry, data=data, request_id=request_id)
    status = await registry.stub.GetUploadStatus(
        pb.GetUploadStatusRequest(request_id=request_id), metadata=registry.auth("alice")
    )
    assert status.request_id == request_id
    assert status.complete
    assert status.committed_size == len(data)
    assert status.learnware == created.name

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetUploadStatus(
            pb.GetUploadStatusRequest(request_id=str(uuid.uuid4())),
            metadata=registry.auth("alice"),
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetUploadStatus(
            pb.GetUploadStatusRequest(), metadata=registry.auth("alice")
        )
    assert violations(exc.value) == ["request_id"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetUploadStatus(pb.GetUploadStatusRequest(request_id=request_id))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_interrupted_upload_stores_nothing(registry: Registry, how: str) -> None:
    data = rezip(ZIP, f"interrupted-{how}".encode())
    sha = hashlib.sha256(data).hexdigest()
    request_id = str(uuid.uuid4())
    messages = upload_requests(data, request_id=request_id)
    assert len(messages) > 2  # header + several chunks: stop after the first chunk
    sent = asyncio.Event()

    async def stalled() -> AsyncIterator[pb.CreateLearnwareRequest]:
        for message in messages[:2]:
            yield message
        sent.set()
        await asyncio.sleep(60)

    before = await total(registry)
    call = registry.stub.CreateLearnware(
        stalled(),
        metadata=registry.auth("alice"),
        timeout=1.0 if how == "deadline" else None,
    )
    if how == "cancel":
        await asyncio.wait_for(sent.wait(), 10)
        await asyncio.sleep(0.3)  # let the server read the chunk
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    else:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.3)  # the server's handler sees the cancellation
    assert await total(registry) == before
    assert not await registry.blobs.exists(sha)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await registry.stub.GetUploadStatus(
            pb.GetUploadStatusRequest(request_id=request_id), metadata=registry.auth("alice")
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
