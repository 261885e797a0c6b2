"""Client-streamed tensors: a TensorHeader, then raw little-endian chunks of at most 1 MiB.

`TensorAssembler` checks the header against the limits before accepting a byte, refuses
chunks that overflow what the header declared, and checks size (and sha256 when given) at the
end, so a short, long or corrupted stream is an error and never a silently wrong array.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np

from lwdock.common.v1 import tensor_pb2
from lwdock.errors import InvalidArgument, ResourceExhausted
from lwdock.tensors import DTYPES, dtype_code

MAX_CHUNK_BYTES = 1024 * 1024


class TensorAssembler:
    def __init__(
        self,
        header: tensor_pb2.TensorHeader,
        field: str,
        *,
        max_bytes: int,
        max_rows: int | None = None,
        ndim: tuple[int, ...] | None = None,
    ) -> None:
        self.field = field
        shape = tuple(int(d) for d in header.shape)
        if ndim is not None and len(shape) not in ndim:
            raise InvalidArgument.for_field(
                f"{field}.shape",
                f"needs {' or '.join(str(n) for n in ndim)} dimensions, got {list(shape)}",
            )
        if any(d < 0 for d in shape):
            raise InvalidArgument.for_field(f"{field}.shape", f"negative dimension {list(shape)}")
        dtype = DTYPES.get(header.dtype)
        if dtype is None:
            raise InvalidArgument.for_field(
                f"{field}.dtype", "must be a numeric dtype (bool, int*, uint*, float*)"
            )
        self.shape = shape
        self.dtype = dtype
        self.total = math.prod(shape) * dtype.itemsize
        if max_rows is not None and shape and shape[0] > max_rows:
            raise ResourceExhausted(
                f"{shape[0]} rows exceed the limit of {max_rows}",
                subject=f"{field}.shape",
                limit=str(max_rows),
            )
        if self.total > max_bytes:
            raise ResourceExhausted(
                f"tensor of {self.total} bytes exceeds the limit of {max_bytes} bytes",
                subject=f"{field}.shape",
                limit=str(max_bytes),
            )
        self.expected_sha256 = header.sha256.lower()
        self._buffer = bytearray(self.total)
        self._offset = 0
        self._hash = hashlib.sha256()

    @property
    def received(self) -> int:
        return self._offset

    def add(self, chunk: bytes) -> None:
        if len(chunk) > MAX_CHUNK_BYTES:
            raise InvalidArgument.for_field(
                "chunk", f"{len(chunk)} bytes; chunks must be at most {MAX_CHUNK_BYTES} bytes"
            )
        end = self._offset + len(chunk)
        if end > self.total:
            raise InvalidArgument.for_field(
                "chunk", f"more bytes than the header declares ({self.total})"
            )
        self._buffer[self._offset : end] = chunk
        self._hash.update(chunk)
        self._offset = end

    def finish(self) -> np.ndarray:
        if self._offset != self.total:
            raise InvalidArgument.for_field(
                "chunk", f"stream ended after {self._offset} of {self.total} declared bytes"
            )
        if self.expected_sha256 and self._hash.hexdigest() != self.expected_sha256:
            raise InvalidArgument.for_field(f"{self.field}.sha256", "does not match the data")
        return np.frombuffer(self._buffer, dtype=self.dtype).reshape(self.shape)


def tensor_header(array: np.ndarray, *, with_sha256: bool = True) -> tensor_pb2.TensorHeader:
    """The header announcing `array` on a chunked stream (the client side)."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    code = dtype_code(array.dtype)
    digest = hashlib.sha256(memoryview(little).cast("B")).hexdigest() if with_sha256 else ""
    return tensor_pb2.TensorHeader(shape=array.shape, dtype=code, sha256=digest)


def tensor_chunks(array: np.ndarray, chunk_bytes: int = MAX_CHUNK_BYTES) -> Iterator[bytes]:
    """`array`'s little-endian bytes as chunks of at most `chunk_bytes`, made lazily."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    raw = memoryview(little).cast("B")
    for start in range(0, len(raw), chunk_bytes):
        yield bytes(raw[start : start + chunk_bytes])
