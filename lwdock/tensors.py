"""numpy arrays <-> lwdock.common.v1.Tensor (shape + dtype + little-endian bytes)."""

from __future__ import annotations

import math

import numpy as np

from lwdock.common.v1 import tensor_pb2
from lwdock.errors import InvalidArgument

DataType = tensor_pb2.DataType

DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DATA_TYPE_BOOL: np.dtype("?"),
    tensor_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    tensor_pb2.DATA_TYPE_INT8: np.dtype("i1"),
    tensor_pb2.DATA_TYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DATA_TYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DATA_TYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DATA_TYPE_UINT64: np.dtype("<u8"),
    tensor_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
}
_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}


def element_count(shape: list[int] | tuple[int, ...], field: str) -> int:
    if any(dim < 0 for dim in shape):
        raise InvalidArgument.for_field(f"{field}.shape", f"negative dimension in {list(shape)}")
    return math.prod(shape)


def to_numpy(tensor: tensor_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Decode a tensor, checking dtype and that the bytes match the shape exactly."""
    shape = tuple(int(d) for d in tensor.shape)
    count = element_count(shape, field)
    if tensor.dtype == tensor_pb2.DATA_TYPE_STRING:
        if len(tensor.strings) != count:
            raise InvalidArgument.for_field(
                f"{field}.strings", f"{len(tensor.strings)} strings for shape {list(shape)}"
            )
        return np.array(list(tensor.strings), dtype=object).reshape(shape)
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidArgument.for_field(f"{field}.dtype", "dtype is unspecified or unknown")
    expected = count * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidArgument.for_field(
            f"{field}.data",
            f"{len(tensor.data)} bytes for shape {list(shape)} of {dtype.name} "
            f"(expected {expected})",
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def dtype_code(dtype: np.dtype) -> int:
    """The DataType of a numeric numpy dtype."""
    code = _BY_KIND.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise InvalidArgument.for_field("tensor.dtype", f"unsupported dtype {dtype}")
    return code


def from_numpy(array: np.ndarray) -> tensor_pb2.Tensor:
    array = np.asarray(array)
    if array.dtype.kind in "OUS":
        return tensor_pb2.Tensor(
            shape=array.shape,
            dtype=tensor_pb2.DATA_TYPE_STRING,
            strings=[str(x) for x in array.reshape(-1)],
        )
    code = dtype_code(array.dtype)
    little = np.ascontiguousarray(array, dtype=DTYPES[code])
    return tensor_pb2.Tensor(shape=array.shape, dtype=code, data=little.tobytes())
