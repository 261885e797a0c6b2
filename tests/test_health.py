"""Every service reports SERVING on grpc.health.v1; unknown names get NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Suite

SERVICES = {
    "spec": ["lwdock.spec.v1.SpecService"],
    "registry": ["lwdock.registry.v1.RegistryService"],
    "search": ["lwdock.search.v1.SearchService"],
    "reuse": ["lwdock.reuse.v1.ReuseService", "inference.GRPCInferenceService"],
}


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_each_service_and_the_server_report_serving(
    suite: Suite, channels: dict[str, grpc.aio.Channel], name: str
) -> None:
    stub = health_pb2_grpc.HealthStub(channels[name])
    for service in ["", *SERVICES[name]]:
        # The registry turns SERVING once its database answered; allow it a moment.
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
            async for update in watch:
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    response = update
                    break
        assert response.status == health_pb2.HealthCheckResponse.SERVING, (name, service)


async def test_unknown_service_name_is_not_found(channels: dict[str, grpc.aio.Channel]) -> None:
    for channel in channels.values():
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_services_do_not_answer_for_each_other(channels: dict[str, grpc.aio.Channel]) -> None:
    stub = health_pb2_grpc.HealthStub(channels["spec"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(
            health_pb2.HealthCheckRequest(service="lwdock.registry.v1.RegistryService"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
