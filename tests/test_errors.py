"""Errors reach clients as google.rpc.Status with the right code and readable details."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lwdock import errors
from lwdock.common.v1 import specification_pb2
from lwdock.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from lwdock.search.v1 import search_service_pb2, search_service_pb2_grpc
from lwdock.server.bootstrap import ServiceApp, start
from lwdock.server.context import downstream_timeout
from lwdock.server.status import from_rpc_error
from lwdock.spec.v1 import spec_service_pb2, spec_service_pb2_grpc
from lwdock.tensors import from_numpy
from search_service.index import SearchIndex
from search_service.servicer import SearchServicer
from tests.conftest import FIXTURES, service_settings


def _reference(name: str) -> specification_pb2.StatisticalSpecification:
    text = (FIXTURES / f"{name}.rkme.json").read_text()
    return specification_pb2.StatisticalSpecification(reference_json=text)


def _rkme(z: np.ndarray, beta: list[float]) -> specification_pb2.StatisticalSpecification:
    return specification_pb2.StatisticalSpecification(
        rkme=specification_pb2.RkmeSpecification(
            type=specification_pb2.SPECIFICATION_TYPE_RKME_TABLE,
            z=from_numpy(z),
            beta=beta,
            gamma=0.1,
        )
    )


def _details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == error.code().value[0]
    found: dict[str, object] = {}
    for detail in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
        ):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                assert cls.__name__ not in found, f"two {cls.__name__} details"
                found[cls.__name__] = message
    return found


async def test_distance_between_reference_specs_matches_the_reference(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    for pair in expected["pairs"]:
        response = await stub.ComputeSpecificationDistance(
            spec_service_pb2.ComputeSpecificationDistanceRequest(
                left=_reference(pair["a"]), right=_reference(pair["b"])
            ),
            timeout=10,
        )
        assert response.inner_product == pytest.approx(pair["inner_prod"], rel=1e-9)
        assert response.mmd2 == pytest.approx(pair["dist"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("left", "field"),
    [
        (_rkme(np.array([[0.0, np.nan]]), [1.0]), "left.rkme.z"),
        (_rkme(np.array([[0.0, np.inf]]), [1.0]), "left.rkme.z"),
        (_rkme(np.zeros((2, 2)), [1.0]), "left.rkme.beta"),
        (_rkme(np.zeros((1, 2)), [float("nan")]), "left.rkme.beta"),
        (
            specification_pb2.StatisticalSpecification(
                rkme=specification_pb2.RkmeSpecification(
                    z=from_numpy(np.zeros((2, 2))), beta=[0.5, 0.5], gamma=-1.0
                )
            ),
            "left.rkme.gamma",
        ),
        (specification_pb2.StatisticalSpecification(), "left"),
        (
            specification_pb2.StatisticalSpecification(reference_json="{not json"),
            "left.reference_json",
        ),
    ],
)
async def test_malformed_spec_is_invalid_argument_with_field_violation(
    channels: dict[str, grpc.aio.Channel],
    left: specification_pb2.StatisticalSpecification,
    field: str,
) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ComputeSpecificationDistance(
            spec_service_pb2.ComputeSpecificationDistanceRequest(
                left=left, right=_reference("table_a_d10")
            ),
            timeout=10,
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = _details(error)
    info = details["ErrorInfo"]
    assert info.domain == "lwdock.spec"  # type: ignore[attr-defined]
    assert info.reason == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    violations = details["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == [field]
    assert violations[0].description
    # The SDK's view of the same error: a typed exception with the violations.
    domain_error = from_rpc_error(error)
    assert isinstance(domain_error, errors.InvalidArgument)
    assert domain_error.violations[0].field == field


async def test_tensor_bytes_must_match_shape(channels: dict[str, grpc.aio.Channel]) -> None:
    left = _rkme(np.zeros((2, 3)), [0.5, 0.5])
    left.rkme.z.data = left.rkme.z.data[:-8]
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ComputeSpecificationDistance(
            spec_service_pb2.ComputeSpecificationDistanceRequest(
                left=left, right=_reference("table_a_d10")
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _details(caught.value)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert violations[0].field == "left.rkme.z.data"
    assert "expected 48" in violations[0].description


async def test_specs_of_different_dimension_are_not_comparable(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ComputeSpecificationDistance(
            spec_service_pb2.ComputeSpecificationDistanceRequest(
                left=_reference("table_a_d10"), right=_reference("table_small_d3")
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _details(caught.value)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert violations[0].field == "right"
    assert "[3]" in violations[0].description and "[10]" in violations[0].description


async def test_search_malformed_spec_is_invalid_argument_with_details(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    stub = search_service_pb2_grpc.SearchServiceStub(channels["search"])
    request = search_service_pb2.SearchLearnwaresRequest()
    request.statistical_specification.reference_json = '{"z": [[1, 2]], "beta": [1, 2]}'
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SearchLearnwares(request, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _details(error)["ErrorInfo"]
    assert info.domain == "lwdock.search"  # type: ignore[attr-defined]
    violations = _details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert violations[0].field == "statistical_specification.reference_json.beta"


async def test_unimplemented_kserve_rpcs_say_so(channels: dict[str, grpc.aio.Channel]) -> None:
    # Every streaming RPC of the suite is implemented now; KServe's model repository
    # extension is declared by the vendored proto but not served by reuse_service.
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channels["reuse"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RepositoryModelLoad(
            grpc_predict_v2_pb2.RepositoryModelLoadRequest(model_name="x"), timeout=10
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "RepositoryModelLoad" in error.details() and "not implemented yet" in error.details()
    info = _details(error)["ErrorInfo"]
    assert info.reason == "NOT_IMPLEMENTED"  # type: ignore[attr-defined]
    assert info.domain == "lwdock.reuse"  # type: ignore[attr-defined]


async def test_request_id_is_accepted_and_echoed(channels: dict[str, grpc.aio.Channel]) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    call = stub.ComputeSpecificationDistance(
        spec_service_pb2.ComputeSpecificationDistanceRequest(
            left=_reference("table_a_d10"), right=_reference("table_b_d10")
        ),
        metadata=(("x-request-id", "req-123"),),
        timeout=10,
    )
    await call
    assert ("x-request-id", "req-123") in tuple(await call.trailing_metadata())
    failing = stub.ComputeSpecificationDistance(
        spec_service_pb2.ComputeSpecificationDistanceRequest(), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await failing
    generated = dict(caught.value.trailing_metadata())["x-request-id"]
    assert len(generated) == 32


class _BrokenSearch(SearchServicer):
    """A servicer whose own code is broken, and one that reports its downstream budget."""

    async def GetIndexStats(self, request, context):  # type: ignore[no-untyped-def]
        budget_ms = int(downstream_timeout(context, margin_s=0.1) * 1000)
        return search_service_pb2.GetIndexStatsResponse(last_sequence=budget_ms)

    async def SearchLearnwares(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail")


async def test_bugs_become_internal_with_a_fixed_message_and_deadlines_are_passed_on(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(tmp_path, database_url)
    app = ServiceApp(
        name="search",
        services=["lwdock.search.v1.SearchService"],
        register=lambda server: search_service_pb2_grpc.add_SearchServiceServicer_to_server(
            _BrokenSearch(SearchIndex()), server
        ),
    )
    handle = await start(app, settings)
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            stub = search_service_pb2_grpc.SearchServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SearchLearnwares(search_service_pb2.SearchLearnwaresRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert caught.value.details() == "Internal server error"
            assert "secret" not in str(_details(caught.value))

            stats = await stub.GetIndexStats(search_service_pb2.GetIndexStatsRequest(), timeout=2.0)
            assert 1500 < stats.last_sequence <= 2000
    finally:
        await handle.stop(settings)


def test_huge_errors_are_clipped_to_fit_in_trailers() -> None:
    from lwdock.server.status import MAX_VIOLATIONS, to_status_proto

    error = errors.InvalidArgument.of(
        [errors.FieldViolation(f"field[{i}]", "x" * 1000) for i in range(500)]
    )
    status = to_status_proto(error, "lwdock.test")
    assert len(status.SerializeToString()) < 16 * 1024
    assert len(status.message) <= 2000
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert len(bad.field_violations) == MAX_VIOLATIONS + 1
    assert bad.field_violations[-1].description == "460 more violations not shown"
