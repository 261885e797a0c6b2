"""spec_service over gRPC: streamed fits as long-running operations, sampling, embedding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import code_pb2, error_details_pb2

from lwdock.common.v1 import specification_pb2
from lwdock.converters import rkme_from_proto
from lwdock.rkme import RKMESpec, mmd2
from lwdock.rkme.device import cuda_available
from lwdock.rkme.fit import mmd2_to_data
from lwdock.server.bootstrap import start
from lwdock.spec.v1 import resources_pb2, spec_service_pb2, spec_service_pb2_grpc
from lwdock.streams import tensor_chunks, tensor_header
from lwdock.tensors import to_numpy
from spec_service.server import build_app as spec_app
from tests.conftest import FIXTURES, service_settings

Request = spec_service_pb2.FitTableSpecificationRequest


def fit_requests(
    data: np.ndarray, config: resources_pb2.TableFitConfig | None = None
) -> Iterator[Request]:
    yield Request(config=config or resources_pb2.TableFitConfig(seed=7))
    yield Request(header=tensor_header(data))
    for chunk in tensor_chunks(data):
        yield Request(chunk=chunk)


async def wait_done(channel: grpc.aio.Channel, name: str) -> operations_pb2.Operation:
    stub = operations_pb2_grpc.OperationsStub(channel)
    for _ in range(600):
        operation = await stub.GetOperation(
            operations_pb2.GetOperationRequest(name=name), timeout=5
        )
        if operation.done:
            return operation
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not finish")


def unpack_spec(operation: operations_pb2.Operation) -> RKMESpec:
    assert operation.WhichOneof("result") == "response", operation.error
    message = specification_pb2.RkmeSpecification()
    assert operation.response.Unpack(message)
    return rkme_from_proto(message, "response")


async def test_fit_fixture_table_through_the_service(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    data = np.load(FIXTURES / "table_a_d10.npy")
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    operation = await stub.FitTableSpecification(fit_requests(data), timeout=30)
    assert operation.name.startswith("operations/")
    metadata = resources_pb2.FitSpecificationMetadata()
    assert operation.metadata.Unpack(metadata)
    assert metadata.rows_received == data.shape[0]
    assert metadata.device == ("cuda" if cuda_available() else "cpu")

    done = await wait_done(channels["spec"], operation.name)
    spec = unpack_spec(done)
    assert spec.z.shape == (100, 10)
    assert spec.num_points == data.shape[0]
    assert spec.beta.sum() == pytest.approx(1.0)
    expected = json.loads((FIXTURES / "expected.json").read_text())
    reference = expected["fit_quality_mmd2_to_data"]["table_a_d10"]
    assert mmd2_to_data(spec, data) <= 1.05 * reference
    final = resources_pb2.FitSpecificationMetadata()
    assert done.metadata.Unpack(final)
    assert final.stage == "done" and final.progress_percent == 100.0

    # The same request fits the same spec (seeded), and WaitOperation returns it too.
    again = await stub.FitTableSpecification(fit_requests(data), timeout=30)
    waited = await operations_pb2_grpc.OperationsStub(channels["spec"]).WaitOperation(
        operations_pb2.WaitOperationRequest(name=again.name), timeout=60
    )
    assert waited.done
    assert np.array_equal(unpack_spec(waited).z, spec.z)

    listed = await operations_pb2_grpc.OperationsStub(channels["spec"]).ListOperations(
        operations_pb2.ListOperationsRequest(page_size=1), timeout=5
    )
    assert len(listed.operations) == 1 and listed.next_page_token


async def test_fit_streams_a_50_mb_tensor(channels: dict[str, grpc.aio.Channel]) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(655_360, 10))  # 52.4 MB of float64, 50 chunks of 1 MiB
    assert data.nbytes > 50 * 10**6
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    operation = await stub.FitTableSpecification(
        fit_requests(data, resources_pb2.TableFitConfig(reduced_set_size=20, steps=1)),
        timeout=120,
    )
    spec = unpack_spec(await wait_done(channels["spec"], operation.name))
    assert spec.num_points == data.shape[0]
    assert spec.z.shape == (20, 10)


async def test_fit_with_an_all_nan_column_fails_as_invalid_argument(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    data = np.ones((50, 3))
    data[:, 1] = np.nan
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    operation = await stub.FitTableSpecification(fit_requests(data), timeout=30)
    done = await wait_done(channels["spec"], operation.name)
    assert done.error.code == code_pb2.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in done.error.details if d.Is(bad.DESCRIPTOR))
    assert bad.field_violations and "1" in bad.field_violations[0].description


def _header(shape: list[int], dtype: int = 12) -> Request:
    return Request(header={"shape": shape, "dtype": dtype})


@pytest.mark.parametrize(
    ("requests", "code", "field"),
    [
        ([_header([10, 2, 2])], grpc.StatusCode.INVALID_ARGUMENT, "header.shape"),
        ([_header([10, 2], dtype=13)], grpc.StatusCode.INVALID_ARGUMENT, "header.dtype"),
        ([Request(chunk=b"x")], grpc.StatusCode.INVALID_ARGUMENT, "chunk"),
        ([_header([4, 2]), Request(chunk=b"\0" * 8)], grpc.StatusCode.INVALID_ARGUMENT, "chunk"),
        ([_header([1, 2]), Request(chunk=b"\0" * 24)], grpc.StatusCode.INVALID_ARGUMENT, "chunk"),
        ([_header([1, 1 << 20]), Request(chunk=b"\0" * ((1 << 20) + 1))], None, "chunk"),
        ([_header([10**9, 10])], grpc.StatusCode.RESOURCE_EXHAUSTED, None),
        ([Request(config={"gamma": -1}), _header([1, 1]), Request(chunk=b"\0" * 8)],
         grpc.StatusCode.INVALID_ARGUMENT, "config.gamma"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "header"),
    ],
)  # fmt: skip
async def test_bad_fit_streams_are_rejected_before_any_work(
    channels: dict[str, grpc.aio.Channel],
    requests: list[Request],
    code: grpc.StatusCode | None,
    field: str | None,
) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.FitTableSpecification(iter(requests), timeout=10)
    assert caught.value.code() == (code or grpc.StatusCode.INVALID_ARGUMENT)
    if field is not None:
        assert field in caught.value.details()


async def test_cancelling_a_fit_stops_its_worker(tmp_path: Path, database_url: str) -> None:
    settings = service_settings(tmp_path, database_url)
    handle = await start(spec_app(settings), settings)
    try:
        rng = np.random.default_rng(1)
        data = rng.normal(size=(400_000, 50))
        async with grpc.aio.insecure_channel(handle.address) as channel:
            stub = spec_service_pb2_grpc.SpecServiceStub(channel)
            operation = await stub.FitTableSpecification(
                fit_requests(data, resources_pb2.TableFitConfig(steps=50)), timeout=60
            )
            me = psutil.Process()
            for _ in range(100):  # the spawned worker appears
                workers = [p for p in me.children() if "spawn_main" in " ".join(p.cmdline())]
                if workers:
                    break
                await asyncio.sleep(0.1)
            assert workers, "no fitting worker process"
            ops = operations_pb2_grpc.OperationsStub(channel)
            await ops.CancelOperation(
                operations_pb2.CancelOperationRequest(name=operation.name), timeout=10
            )
            done = await ops.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name), timeout=5
            )
            assert done.done and done.error.code == code_pb2.CANCELLED
            _, alive = psutil.wait_procs(workers, timeout=5)
            assert not alive, "the worker survived the cancellation"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ops.GetOperation(
                    operations_pb2.GetOperationRequest(name="operations/nope"), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await handle.stop(settings)


async def test_sample_and_embed_specification(channels: dict[str, grpc.aio.Channel]) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    text = (FIXTURES / "table_a_d10.rkme.json").read_text()
    spec = RKMESpec.from_reference_json(text)
    source = specification_pb2.StatisticalSpecification(reference_json=text)
    sampled = await stub.SampleSpecification(
        spec_service_pb2.SampleSpecificationRequest(specification=source, sample_count=1000),
        timeout=30,
    )
    samples = to_numpy(sampled.samples)
    assert samples.shape == (1000, 10) and samples.dtype == np.float32
    as_spec = RKMESpec(z=samples.astype(np.float64), beta=np.full(1000, 1e-3), gamma=0.1)
    other = RKMESpec.from_reference_json((FIXTURES / "table_c_d10.rkme.json").read_text())
    assert mmd2(spec, as_spec) < 0.2 * mmd2(spec, other)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SampleSpecification(
            spec_service_pb2.SampleSpecificationRequest(specification=source, sample_count=0),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    embedded = await stub.EmbedSpecification(
        spec_service_pb2.EmbedSpecificationRequest(specification=source, dimension=256, seed=3),
        timeout=10,
    )
    assert len(embedded.embedding) == 256 and embedded.seed == 3
    again = await stub.EmbedSpecification(
        spec_service_pb2.EmbedSpecificationRequest(specification=source, dimension=256, seed=3),
        timeout=10,
    )
    assert list(again.embedding) == list(embedded.embedding)


TEXTS = [
    f"The {adjective} {noun} was served with fresh herbs and a little olive oil."
    for adjective in ("roasted", "grilled", "baked", "steamed", "fried")
    for noun in ("chicken", "salmon", "pumpkin", "eggplant", "potatoes", "mushrooms")
]


async def test_fit_text_specification_through_the_service(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    requests = [
        spec_service_pb2.FitTextSpecificationRequest(
            config=resources_pb2.TextFitConfig(table=resources_pb2.TableFitConfig(seed=1))
        ),
        spec_service_pb2.FitTextSpecificationRequest(texts={"texts": TEXTS[:15]}),
        spec_service_pb2.FitTextSpecificationRequest(texts={"texts": TEXTS[15:]}),
    ]
    operation = await stub.FitTextSpecification(iter(requests), timeout=30)
    done = await wait_done(channels["spec"], operation.name)
    assert done.WhichOneof("result") == "response", done.error
    message = specification_pb2.RkmeSpecification()
    assert done.response.Unpack(message)
    assert message.type == specification_pb2.SPECIFICATION_TYPE_RKME_TEXT
    assert list(message.language) == ["en"]
    assert message.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert message.num_points == len(TEXTS)
    assert list(message.z.shape) == [20, 384]  # K = 2n/3 for n = 30 <= 100

    wrong_model = [
        spec_service_pb2.FitTextSpecificationRequest(
            config=resources_pb2.TextFitConfig(embedding_model="bert-base-uncased")
        ),
        spec_service_pb2.FitTextSpecificationRequest(texts={"texts": TEXTS}),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.FitTextSpecification(iter(wrong_model), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.embedding_model" in caught.value.details()


def _stripes_and_blobs(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Two visibly different uint8 image sets, NHWC 28x28x3."""
    rng = np.random.default_rng(seed)
    rows = np.arange(28)[:, None]
    stripes = np.empty((count, 28, 28, 3), dtype=np.uint8)
    blobs = np.empty_like(stripes)
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(count):
        period = rng.integers(3, 7)
        stripes[i] = ((rows % period < period // 2) * 200 + rng.integers(0, 40))[..., None]
        cy, cx = rng.integers(8, 20, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) * 230
        blobs[i] = (blob + rng.integers(0, 20))[..., None].clip(0, 255)
    return stripes, blobs


async def test_fit_image_specifications_through_the_service(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    stripes, blobs = _stripes_and_blobs(0, 60)
    stub = spec_service_pb2_grpc.SpecServiceStub(channels["spec"])
    specs = []
    for images in (stripes, blobs):
        requests = [
            spec_service_pb2.FitImageSpecificationRequest(
                config=resources_pb2.ImageFitConfig(reduced_set_size=8, steps=2, layout="NHWC")
            ),
            spec_service_pb2.FitImageSpecificationRequest(header=tensor_header(images)),
            *(
                spec_service_pb2.FitImageSpecificationRequest(chunk=chunk)
                for chunk in tensor_chunks(images)
            ),
        ]
        operation = await stub.FitImageSpecification(iter(requests), timeout=30)
        done = await wait_done(channels["spec"], operation.name)
        assert done.WhichOneof("result") == "response", done.error
        message = specification_pb2.RkmeSpecification()
        assert done.response.Unpack(message)
        assert message.type == specification_pb2.SPECIFICATION_TYPE_RKME_IMAGE
        assert list(message.z.shape) == [8, 3, 32, 32]
        assert message.image_kernel.version == 2
        specs.append(specification_pb2.StatisticalSpecification(rkme=message))

    # Held-out images of each kind, as uniform-weight specs, are nearer their own spec.
    from lwdock.rkme.image import uniform_image_spec

    held_stripes, held_blobs = _stripes_and_blobs(1, 30)
    distance = stub.ComputeSpecificationDistance
    for spec, own, other in (
        (specs[0], held_stripes, held_blobs),
        (specs[1], held_blobs, held_stripes),
    ):
        near, far = [
            (
                await distance(
                    spec_service_pb2.ComputeSpecificationDistanceRequest(
                        left=spec,
                        right={"reference_json": json.dumps(
                            uniform_image_spec(images, layout="NHWC").to_reference_dict()
                        )},
                    ),
                    timeout=30,
                )
            ).mmd2
            for images in (own, other)
        ]  # fmt: skip
        assert near < far

    # A table spec and an image spec do not compare.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await distance(
            spec_service_pb2.ComputeSpecificationDistanceRequest(
                left=specs[0],
                right={"reference_json": (FIXTURES / "table_a_d10.rkme.json").read_text()},
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
