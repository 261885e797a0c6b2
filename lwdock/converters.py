"""Protobuf messages <-> domain values, shared by servicers and the SDK."""

from __future__ import annotations

import numpy as np

from lwdock.common.v1 import specification_pb2
from lwdock.errors import InvalidArgument
from lwdock.rkme.spec import RKMESpec, SpecType
from lwdock.tensors import from_numpy, to_numpy

_TYPE_TO_PROTO = {
    SpecType.TABLE: specification_pb2.SPECIFICATION_TYPE_RKME_TABLE,
    SpecType.IMAGE: specification_pb2.SPECIFICATION_TYPE_RKME_IMAGE,
    SpecType.TEXT: specification_pb2.SPECIFICATION_TYPE_RKME_TEXT,
}
_TYPE_FROM_PROTO = {v: k for k, v in _TYPE_TO_PROTO.items()}


def rkme_from_proto(message: specification_pb2.RkmeSpecification, field: str) -> RKMESpec:
    """Decode and validate; every problem is an InvalidArgument naming `field`.<sub-field>."""
    if not message.HasField("z"):
        raise InvalidArgument.for_field(f"{field}.z", "required")
    spec_type = _TYPE_FROM_PROTO.get(message.type, SpecType.TABLE)
    if message.type not in _TYPE_FROM_PROTO and message.type != 0:
        raise InvalidArgument.for_field(f"{field}.type", f"unknown type {message.type}")
    z = to_numpy(message.z, f"{field}.z")
    if z.dtype.kind != "f":
        raise InvalidArgument.for_field(f"{field}.z.dtype", "must be FLOAT32 or FLOAT64")

    image_kernel = (
        image_kernel_from_proto(message.image_kernel, f"{field}.image_kernel")
        if spec_type is SpecType.IMAGE
        else None
    )
    spec = RKMESpec(
        image_kernel=image_kernel,
        z=z.astype(np.float64),
        beta=np.asarray(message.beta, dtype=np.float64),
        gamma=message.gamma if message.gamma else 0.1,
        num_points=message.num_points,
        type=spec_type,
        language=list(message.language),
        embedding_model=message.embedding_model,
        fit_mmd2=message.fit_mmd2,
    )
    return spec.validate(f"{field}.")


def image_kernel_from_proto(message: specification_pb2.ImageKernel, field: str) -> object:
    """The ImageKernel of an image spec message (version 0 = 2, ours)."""
    from lwdock.rkme.image import REFERENCE_IMAGE_VERSION, RKME_IMAGE_VERSION, ImageKernel

    version = message.version or RKME_IMAGE_VERSION
    defaults = ImageKernel()
    if version == REFERENCE_IMAGE_VERSION:
        kernel = ImageKernel(
            version=version,
            n_models=message.n_models or 16,
            width=message.net_width or 128,
            depth=message.net_depth or 3,
            pixel_mean=None,
            pixel_std=None,
        )
    else:
        kernel = ImageKernel(
            version=version,
            n_models=message.n_models or defaults.n_models,
            width=message.net_width or defaults.width,
            depth=message.net_depth or defaults.depth,
            seed=message.seed,
            pixel_mean=message.pixel_mean if message.pixel_std else defaults.pixel_mean,
            pixel_std=message.pixel_std or defaults.pixel_std,
        )
    return kernel.validate(f"{field}.")


def image_kernel_to_proto(kernel: object) -> specification_pb2.ImageKernel:
    from lwdock.rkme.image import ImageKernel

    assert isinstance(kernel, ImageKernel)
    return specification_pb2.ImageKernel(
        version=kernel.version,
        n_models=kernel.n_models,
        net_width=kernel.width,
        net_depth=kernel.depth,
        seed=kernel.seed,
        pixel_mean=kernel.pixel_mean or 0.0,
        pixel_std=kernel.pixel_std or 0.0,
    )


def rkme_to_proto(spec: RKMESpec) -> specification_pb2.RkmeSpecification:
    return specification_pb2.RkmeSpecification(
        image_kernel=image_kernel_to_proto(spec.image_kernel) if spec.image_kernel else None,
        type=_TYPE_TO_PROTO[spec.type],
        z=from_numpy(spec.z),
        beta=spec.beta.tolist(),
        gamma=spec.gamma,
        num_points=spec.num_points,
        language=spec.language,
        embedding_model=spec.embedding_model,
        fit_mmd2=spec.fit_mmd2,
    )


def statistical_spec_from_proto(
    message: specification_pb2.StatisticalSpecification, field: str
) -> RKMESpec:
    source = message.WhichOneof("source")
    if source == "rkme":
        return rkme_from_proto(message.rkme, f"{field}.rkme")
    if source == "reference_json":
        return RKMESpec.from_reference_json(message.reference_json, f"{field}.reference_json.")
    raise InvalidArgument.for_field(field, "required: set `rkme` or `reference_json`")
