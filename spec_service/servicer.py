"""Thin SpecService servicer: convert, call lwdock.rkme, convert back."""

from __future__ import annotations

import grpc

from lwdock.converters import statistical_spec_from_proto
from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.rkme import RKMESpec, inner_product
from lwdock.spec.v1 import spec_service_pb2, spec_service_pb2_grpc


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
        raise InvalidArgument("specifications are not comparable", problems)


class SpecServicer(spec_service_pb2_grpc.SpecServiceServicer):
    async def ComputeSpecificationDistance(
        self,
        request: spec_service_pb2.ComputeSpecificationDistanceRequest,
        context: grpc.aio.ServicerContext,
    ) -> spec_service_pb2.ComputeSpecificationDistanceResponse:
        left = statistical_spec_from_proto(request.left, "left")
        right = statistical_spec_from_proto(request.right, "right")
        _check_comparable(left, right)
        left_self, cross, right_self = (
            inner_product(left, left),
            inner_product(left, right),
            inner_product(right, right),
        )
        return spec_service_pb2.ComputeSpecificationDistanceResponse(
            inner_product=cross,
            mmd2=left_self - 2.0 * cross + right_self,
            left_self_inner_product=left_self,
            right_self_inner_product=right_self,
        )
