"""Length-prefixed frames between reuse_service and a sandboxed runner.

A frame is an 8-byte little-endian length, then that many bytes. A message is a JSON frame
(`{"op": ...}` or `{"ok": ...}`), optionally followed by one npy frame (an array written by
`numpy.lib.format` without pickles). Both sides load arrays with `allow_pickle=False`.

Used by the runner inside the sandbox: standard library and numpy only.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any, BinaryIO

import numpy as np

LENGTH = struct.Struct("<Q")
MAX_JSON_BYTES = 4 * 1024 * 1024
WRITE_CHUNK_BYTES = 1 << 20


def encode_json(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return LENGTH.pack(len(payload)) + payload


def npy_header(array: np.ndarray) -> bytes:
    """The npy header of `array` (format 1.0/2.0/3.0 as needed); refuses object arrays."""
    if array.dtype.hasobject:
        raise TypeError(f"arrays of dtype {array.dtype} cannot be sent (objects need pickle)")
    out = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(array)
    header["fortran_order"] = False  # the data is always written in C order
    try:
        np.lib.format.write_array_header_1_0(out, header)
    except ValueError:  # a header over 64 KiB
        out = io.BytesIO()
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue()


def write_array(stream: BinaryIO, array: np.ndarray) -> None:
    """One npy frame, streamed: the array is never copied whole."""
    array = np.asanyarray(array)
    header = npy_header(array)
    stream.write(LENGTH.pack(len(header) + array.nbytes))
    stream.write(header)
    stream.flush()  # the reader sees the size before any data is made
    if array.nbytes:
        flat = array.reshape(-1, order="C") if array.flags.c_contiguous else None
        if flat is not None:
            raw = memoryview(flat).cast("B")
            for start in range(0, len(raw), WRITE_CHUNK_BYTES):
                stream.write(raw[start : start + WRITE_CHUNK_BYTES])
        else:  # e.g. a broadcast or strided view: write it row block by row block
            rows = max(1, WRITE_CHUNK_BYTES // max(1, array[:1].nbytes))
            for start in range(0, len(array), rows):
                stream.write(np.ascontiguousarray(array[start : start + rows]).tobytes())
    stream.flush()


def array_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    write_array(out, array)
    return out.getvalue()


def load_array(payload: bytes | memoryview) -> np.ndarray:
    """An npy payload (without its length prefix) as an array; never unpickles."""
    return np.load(io.BytesIO(payload), allow_pickle=False)


def load_array_checked(payload: bytes | memoryview) -> np.ndarray:
    """An npy payload from an untrusted sender: the header is parsed first and must describe
    exactly the bytes that follow it, so a lying shape never allocates. ValueError otherwise."""
    stream = io.BytesIO(payload)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_JSON_BYTES)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_JSON_BYTES)
    else:
        raise ValueError(f"npy format version {version} is not accepted")
    shape, fortran_order, dtype = header
    if dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"arrays of dtype {dtype} are not accepted")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"bad shape {shape!r}")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(payload) - offset:
        raise ValueError(
            f"the header claims shape {list(shape)} of {dtype} ({count * dtype.itemsize:,} "
            f"bytes) but {len(payload) - offset:,} bytes follow it"
        )
    flat = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy(order="K")


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("stream closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, max_bytes: int) -> bytes:
    header = stream.read(LENGTH.size)
    if not header:
        raise EOFError("stream closed")
    if len(header) < LENGTH.size:
        header += read_exactly(stream, LENGTH.size - len(header))
    (size,) = LENGTH.unpack(header)
    if size > max_bytes:
        raise ValueError(f"frame of {size} bytes exceeds {max_bytes}")
    return read_exactly(stream, size)


def read_json(stream: BinaryIO) -> dict[str, Any]:
    message = json.loads(read_frame(stream, MAX_JSON_BYTES))
    if not isinstance(message, dict):
        raise ValueError("a JSON frame must hold an object")
    return message
