"""Thin SpecService servicer: convert, call lwdock.rkme (or a fit worker), convert back."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import asdict

import grpc
import numpy as np
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2

from lwdock.converters import rkme_to_proto, statistical_spec_from_proto
from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.rkme import RKMESpec, SpecType, inner_product
from lwdock.rkme.device import resolve_device
from lwdock.rkme.embedding import DEFAULT_DIMENSION, rff_embedding
from lwdock.rkme.herding import herd
from lwdock.rkme.text import EMBEDDING_MODEL, MAX_TEXTS, MAX_TOTAL_CHARACTERS
from lwdock.server.operations import OperationStore
from lwdock.settings import Settings
from lwdock.spec.v1 import resources_pb2, spec_service_pb2, spec_service_pb2_grpc
from lwdock.tensors import from_numpy
from spec_service.fitting import FitKind, TableFitOptions, run_fit
from spec_service.uploads import read_tensor_stream, read_text_stream

MAX_SAMPLES = 1_000_000
MAX_EMBEDDING_DIMENSION = 65_536


def _check_comparable(left: RKMESpec, right: RKMESpec) -> None:
    problems = []
    if left.type is not right.type:
        problems.append(
            FieldViolation(
                "right", f"type {right.type.value} differs from left's {left.type.value}"
            )
        )
    if left.sample_shape != right.sample_shape:
        problems.append(
            FieldViolation(
                "right",
                f"sample shape {list(right.sample_shape)} differs from left's "
                f"{list(left.sample_shape)}",
            )
        )
    if problems:
        raise InvalidArgument.of(problems, "specifications are not comparable")


def table_fit_options(config: resources_pb2.TableFitConfig | None) -> TableFitOptions:
    """Zero values mean the reference's defaults; anything else must make sense."""
    config = config or resources_pb2.TableFitConfig()
    problems = []
    if config.gamma < 0 or not math.isfinite(config.gamma):
        problems.append(FieldViolation("config.gamma", "must be > 0 (0 = default 0.1)"))
    if config.reduced_set_size < 0:
        problems.append(FieldViolation("config.reduced_set_size", "must be >= 0 (0 = 100)"))
    if config.steps < 0:
        problems.append(FieldViolation("config.steps", "must be >= 0 (0 = default 3)"))
    if problems:
        raise InvalidArgument.of(problems, "invalid fit configuration")
    return TableFitOptions(
        gamma=config.gamma or 0.1,
        reduced_set_size=config.reduced_set_size or 100,
        steps=config.steps or 3,
        seed=config.seed,
        nonnegative_beta=not config.allow_negative_beta,
    )


def _image_embedding(spec: RKMESpec) -> np.ndarray:
    from lwdock.rkme.image import RKME_IMAGE_VERSION, ImageRKME, image_embedding

    if spec.image_kernel.version != RKME_IMAGE_VERSION:
        raise InvalidArgument.for_field(
            "specification", "reference (version 1) image specs have no feature embedding"
        )
    return image_embedding(ImageRKME(spec, spec.image_kernel, spec.msg))


def image_fit_options(config: resources_pb2.ImageFitConfig | None) -> dict[str, object]:
    """Keyword arguments of lwdock.rkme.image.fit_image_rkme; zero values = its defaults."""
    config = config or resources_pb2.ImageFitConfig()
    problems = []
    layout = config.layout.upper() or "NCHW"
    if layout not in ("NCHW", "NHWC"):
        problems.append(FieldViolation("config.layout", "must be NCHW or NHWC"))
    if config.reduced_set_size < 0:
        problems.append(FieldViolation("config.reduced_set_size", "must be >= 0 (0 = 50)"))
    if config.steps < 0:
        problems.append(FieldViolation("config.steps", "must be >= 0 (0 = default)"))
    if problems:
        raise InvalidArgument.of(problems, "invalid fit configuration")
    options: dict[str, object] = {"layout": layout, "seed": config.seed}
    if config.reduced_set_size:
        options["reduced_set_size"] = config.reduced_set_size
    if config.steps:
        options["steps"] = config.steps
    return options


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class SpecServicer(spec_service_pb2_grpc.SpecServiceServicer):
    def __init__(self, settings: Settings, operations: OperationStore) -> None:
        self.settings = settings
        self.operations = operations
        # "cpu" or the CUDA device fits run on (checked at start: a bad setting stops startup)
        self.device = resolve_device(settings.fit_device, "LWDOCK_FIT_DEVICE")

    async def FitTableSpecification(
        self,
        request_iterator: AsyncIterator[spec_service_pb2.FitTableSpecificationRequest],
        context: grpc.aio.ServicerContext,
    ) -> operations_pb2.Operation:
        config, data = await read_tensor_stream(
            request_iterator,
            config_field="config",
            max_bytes=self.settings.fit_max_bytes,
            max_rows=self.settings.fit_max_rows,
            ndim=(2,),
        )
        options = table_fit_options(config)
        return self._start_fit("table", data, asdict(options), int(data.shape[0]))

    async def FitTextSpecification(
        self,
        request_iterator: AsyncIterator[spec_service_pb2.FitTextSpecificationRequest],
        context: grpc.aio.ServicerContext,
    ) -> operations_pb2.Operation:
        config, texts = await read_text_stream(
            request_iterator,
            max_texts=MAX_TEXTS,
            max_characters=MAX_TOTAL_CHARACTERS,
        )
        if config is not None and config.embedding_model not in ("", EMBEDDING_MODEL):
            raise InvalidArgument.for_field(
                "config.embedding_model",
                f"{config.embedding_model!r} is not available here; this server embeds with "
                f"{EMBEDDING_MODEL!r}",
            )
        options = table_fit_options(config.table if config is not None else None)
        return self._start_fit("text", texts, asdict(options), len(texts))

    async def FitImageSpecification(
        self,
        request_iterator: AsyncIterator[spec_service_pb2.FitImageSpecificationRequest],
        context: grpc.aio.ServicerContext,
    ) -> operations_pb2.Operation:
        config, images = await read_tensor_stream(
            request_iterator,
            config_field="config",
            max_bytes=self.settings.fit_max_bytes,
            max_rows=self.settings.fit_max_rows,
            ndim=(4,),
        )
        return self._start_fit("image", images, image_fit_options(config), int(images.shape[0]))

    def _start_fit(
        self, kind: FitKind, data: object, options: dict[str, object], rows: int
    ) -> operations_pb2.Operation:
        options = {**options, "device": self.device}
        metadata = resources_pb2.FitSpecificationMetadata(
            stage="queued",
            rows_received=rows,
            create_time=_now(),
            update_time=_now(),
            device=self.device,
        )

        async def work(set_metadata):  # type: ignore[no-untyped-def]
            def progress(stage: str, fraction: float) -> None:
                metadata.stage = stage
                metadata.progress_percent = round(100.0 * fraction, 2)
                metadata.update_time.GetCurrentTime()
                set_metadata(metadata)

            spec = await run_fit(kind, data, options, progress)
            progress("done", 1.0)
            return rkme_to_proto(spec)

        return self.operations.start(work, metadata)

    async def ComputeSpecificationDistance(
        self,
        request: spec_service_pb2.ComputeSpecificationDistanceRequest,
        context: grpc.aio.ServicerContext,
    ) -> spec_service_pb2.ComputeSpecificationDistanceResponse:
        left = statistical_spec_from_proto(request.left, "left")
        right = statistical_spec_from_proto(request.right, "right")
        _check_comparable(left, right)
        left_self, cross, right_self = await asyncio.to_thread(
            lambda: (
                inner_product(left, left),
                inner_product(left, right),
                inner_product(right, right),
            )
        )
        return spec_service_pb2.ComputeSpecificationDistanceResponse(
            inner_product=cross,
            mmd2=left_self - 2.0 * cross + right_self,
            left_self_inner_product=left_self,
            right_self_inner_product=right_self,
        )

    async def SampleSpecification(
        self,
        request: spec_service_pb2.SampleSpecificationRequest,
        context: grpc.aio.ServicerContext,
    ) -> spec_service_pb2.SampleSpecificationResponse:
        spec = statistical_spec_from_proto(request.specification, "specification")
        if spec.type is SpecType.IMAGE:
            raise InvalidArgument.for_field(
                "specification", "herding is defined for table and text specifications"
            )
        if not 0 < request.sample_count <= MAX_SAMPLES:
            raise InvalidArgument.for_field("sample_count", f"must be between 1 and {MAX_SAMPLES}")
        samples = await asyncio.to_thread(herd, spec, request.sample_count, seed=request.seed)
        return spec_service_pb2.SampleSpecificationResponse(samples=from_numpy(samples))

    async def EmbedSpecification(
        self, request: spec_service_pb2.EmbedSpecificationRequest, context: grpc.aio.ServicerContext
    ) -> spec_service_pb2.EmbedSpecificationResponse:
        spec = statistical_spec_from_proto(request.specification, "specification")
        dimension = request.dimension or DEFAULT_DIMENSION
        if not 0 < dimension <= MAX_EMBEDDING_DIMENSION:
            raise InvalidArgument.for_field(
                "dimension", f"must be between 1 and {MAX_EMBEDDING_DIMENSION}"
            )
        if spec.type is SpecType.IMAGE:  # its own feature map: mu = sum beta_i phi(z_i)
            vector = await asyncio.to_thread(_image_embedding, spec)
            dimension = int(vector.shape[0])
        else:
            vector = await asyncio.to_thread(rff_embedding, spec, dimension, request.seed)
        return spec_service_pb2.EmbedSpecificationResponse(
            embedding=vector.tolist(), dimension=dimension, seed=request.seed
        )
