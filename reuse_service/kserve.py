"""KServe v2 / Open Inference Protocol tensors <-> numpy (one input, one output per call)."""

from __future__ import annotations

import math

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.inference import grpc_predict_v2_pb2 as v2

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}
# Which InferTensorContents field holds which datatype (KServe v2 spec).
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def datatype_of(dtype: np.dtype) -> str:
    name = _NAMES.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise InvalidArgument.for_field("outputs", f"dtype {dtype} has no KServe datatype")
    return name


def input_array(request: v2.ModelInferRequest) -> np.ndarray:
    """The request's single input tensor, from raw_input_contents or typed contents."""
    if len(request.inputs) != 1:
        raise InvalidArgument.for_field(
            "inputs", f"exactly one input tensor, got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidArgument.for_field(
            "inputs[0].datatype", f"{tensor.datatype!r} is not one of {sorted(DATATYPES)}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument.for_field("inputs[0].shape", f"negative dimension in {list(shape)}")
    count = math.prod(shape)
    if request.raw_input_contents:
        raw = request.raw_input_contents[0]
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgument.for_field(
                "raw_input_contents[0]",
                f"{len(raw)} bytes for shape {list(shape)} of {tensor.datatype}",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = _CONTENTS.get(tensor.datatype)
    values = list(getattr(tensor.contents, field)) if field else []
    if len(values) != count:
        raise InvalidArgument.for_field(
            f"inputs[0].contents.{field}", f"{len(values)} values for shape {list(shape)}"
        )
    if values and dtype.kind in "iu":  # the proto field is wider than UINT8..INT32
        info = np.iinfo(dtype)
        low, high = min(values), max(values)
        if low < info.min or high > info.max:
            raise InvalidArgument.for_field(
                f"inputs[0].contents.{field}",
                f"{low if low < info.min else high} is out of range for {tensor.datatype} "
                f"[{info.min}, {info.max}]",
            )
    return np.asarray(values, dtype=dtype).reshape(shape)


def infer_response(
    request: v2.ModelInferRequest, output: np.ndarray, output_name: str = "output"
) -> v2.ModelInferResponse:
    if request.outputs and [o.name for o in request.outputs] != [output_name]:
        raise InvalidArgument.for_field("outputs", f"this model has one output, {output_name!r}")
    little = np.ascontiguousarray(output, dtype=output.dtype.newbyteorder("<"))
    return v2.ModelInferResponse(
        model_name=request.model_name,
        model_version=request.model_version or "1",
        id=request.id,
        outputs=[
            v2.ModelInferResponse.InferOutputTensor(
                name=output_name, datatype=datatype_of(output.dtype), shape=list(output.shape)
            )
        ],
        raw_output_contents=[little.tobytes()],
    )
