"""The shared bootstrap: auth, metrics, graceful shutdown, port binding, message size."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from lwdock.channels import aio_channel
from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.settings import Settings
from lwdock.spec.v1 import spec_service_pb2, spec_service_pb2_grpc
from lwdock.tokens import add_token, new_token
from spec_service.server import build_app as spec_app
from tests.conftest import FIXTURES, service_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _distance_request(pad: int = 0) -> spec_service_pb2.ComputeSpecificationDistanceRequest:
    text = (FIXTURES / "table_a_d10.rkme.json").read_text()
    left = json.loads(text)
    if pad:
        left["padding"] = "x" * pad  # unknown keys are ignored, as the reference does
    return spec_service_pb2.ComputeSpecificationDistanceRequest(
        left={"reference_json": json.dumps(left)}, right={"reference_json": text}
    )


@pytest_asyncio.fixture(loop_scope="session")
async def locked_spec(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[ServerHandle, str, Settings]]:
    """A spec server that refuses anonymous calls; yields (handle, valid token, settings)."""
    token = new_token()
    tokens_file = tmp_path / "tokens.json"
    add_token(tokens_file, token, "users/alice", "developer")
    settings = service_settings(
        tmp_path, database_url, tokens_file=tokens_file, allow_anonymous=False, metrics_port=0
    )
    handle = await start(spec_app(settings), settings)
    try:
        yield handle, token, settings
    finally:
        await handle.stop(settings)


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def test_token_auth(locked_spec: tuple[ServerHandle, str, Settings]) -> None:
    handle, token, _ = locked_spec
    async with grpc.aio.insecure_channel(handle.address) as channel:
        stub = spec_service_pb2_grpc.SpecServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ComputeSpecificationDistance(_distance_request(), timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _error_info(missing.value).reason == "TOKEN_MISSING"

        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.ComputeSpecificationDistance(
                _distance_request(), metadata=(("authorization", "Bearer lwd_nope"),), timeout=5
            )
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _error_info(wrong.value).reason == "BAD_TOKEN"

        ok = await stub.ComputeSpecificationDistance(
            _distance_request(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
        )
        assert ok.mmd2 == 0.0

        # Health stays open to probes; reflection is public by default (grpcurl).
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == 1
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
        assert "lwdock.spec.v1.SpecService" in names

    # The SDK channel sends the token (and would retry UNAVAILABLE on idempotent calls).
    async with aio_channel(handle.address, token=token) as channel:
        stub = spec_service_pb2_grpc.SpecServiceStub(channel)
        ok = await stub.ComputeSpecificationDistance(_distance_request(), timeout=5)
        assert ok.inner_product > 0


async def test_prometheus_metrics_count_calls_by_code(
    locked_spec: tuple[ServerHandle, str, Settings],
) -> None:
    handle, token, _ = locked_spec
    assert handle.metrics_port
    async with aio_channel(handle.address, token=token) as channel:
        stub = spec_service_pb2_grpc.SpecServiceStub(channel)
        await stub.ComputeSpecificationDistance(_distance_request(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ComputeSpecificationDistance(
                spec_service_pb2.ComputeSpecificationDistanceRequest(), timeout=5
            )
    url = f"http://127.0.0.1:{handle.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    labels = (
        'grpc_code="{code}",grpc_method="ComputeSpecificationDistance",'
        'grpc_service="lwdock.spec.v1.SpecService",grpc_type="unary"'
    )
    assert f"grpc_server_handled_total{{{labels.format(code='OK')}}}" in body
    assert f"grpc_server_handled_total{{{labels.format(code='INVALID_ARGUMENT')}}}" in body
    assert "grpc_server_handling_seconds_bucket" in body
    assert "grpc_server_started_total" in body


async def test_graceful_shutdown_reports_not_serving_then_refuses_calls(
    tmp_path: Path, database_url: str
) -> None:
    settings = service_settings(tmp_path, database_url, drain_delay_s=1.0, grace_s=1.0)
    handle = await start(spec_app(settings), settings)
    async with grpc.aio.insecure_channel(handle.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(handle.stop(settings))
        update = await watch.read()
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Still draining: calls are answered while load balancers take us out.
        stub = spec_service_pb2_grpc.SpecServiceStub(channel)
        assert (await stub.ComputeSpecificationDistance(_distance_request(), timeout=5)).mmd2 == 0
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ComputeSpecificationDistance(_distance_request(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_second_server_on_the_same_port_fails_to_bind(
    tmp_path: Path, database_url: str
) -> None:
    settings = service_settings(tmp_path, database_url)
    first = await start(spec_app(settings), settings)
    try:
        taken = settings.model_copy(update={"port": first.port})
        with pytest.raises(RuntimeError):
            await start(spec_app(taken), taken)
    finally:
        await first.stop(settings)


async def test_messages_above_4mib_are_accepted_up_to_the_configured_limit(
    tmp_path: Path, database_url: str
) -> None:
    settings = service_settings(tmp_path, database_url, max_receive_message_bytes=8 * 2**20)
    handle = await start(spec_app(settings), settings)
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            stub = spec_service_pb2_grpc.SpecServiceStub(channel)
            five_mib = await stub.ComputeSpecificationDistance(
                _distance_request(pad=5 * 2**20), timeout=10
            )
            assert five_mib.mmd2 == 0.0
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ComputeSpecificationDistance(
                    _distance_request(pad=9 * 2**20), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await handle.stop(settings)


async def test_registry_reports_serving_only_while_its_database_answers(
    tmp_path: Path,
) -> None:
    from registry_service.server import build_app as registry_app

    # Nothing listens on this socket directory: the database is unreachable.
    settings = service_settings(
        tmp_path, f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=1"
    )
    handle = await start(registry_app(settings), settings)
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await asyncio.sleep(0.5)
            response = await health.Check(
                health_pb2.HealthCheckRequest(service="lwdock.registry.v1.RegistryService"),
                timeout=5,
            )
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # Calls that need no database still answer.
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            vocabulary = await stub.GetSemanticVocabulary(
                registry_service_pb2.GetSemanticVocabularyRequest(), timeout=5
            )
            assert any(key.key == "Data" for key in vocabulary.keys)
    finally:
        await handle.stop(settings)
