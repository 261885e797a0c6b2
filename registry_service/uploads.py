"""Receiving a package upload stream: header first, then chunks; size and sha256 verified.

Nothing is stored here: the bytes are held in memory until the whole package has arrived and
matched its header, and only the caller decides (after validation) to keep them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from lwdock.errors import InvalidArgument, ResourceExhausted

# Largest package accepted (Settings has no upload limit yet).
MAX_UPLOAD_BYTES = 512 * 1024**2
# Largest chunk in one stream message.
MAX_CHUNK_BYTES = 1024**2

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Upload:
    header: Any
    data: bytes
    sha256: str


def check_header(
    size_bytes: int, sha256: str, *, prefix: str = "header", limit: int = MAX_UPLOAD_BYTES
) -> None:
    if size_bytes > limit:
        raise ResourceExhausted(
            f"package of {size_bytes} bytes exceeds the upload limit of {limit} bytes",
            subject=f"{prefix}.size_bytes",
            limit=str(limit),
        )
    if size_bytes <= 0:
        raise InvalidArgument.for_field(f"{prefix}.size_bytes", "required: the package size (> 0)")
    if not _SHA256.match(sha256):
        raise InvalidArgument.for_field(
            f"{prefix}.sha256", "required: 64 lowercase hex digits (sha256 of the package)"
        )


async def receive(
    requests: AsyncIterable[Any], *, limit: int = MAX_UPLOAD_BYTES, prefix: str = "header"
) -> Upload:
    """Read a `header` + `chunk`s stream (CreateLearnware / ReplaceLearnwarePackage)."""
    header: Any = None
    buffer = bytearray()
    digest = hashlib.sha256()
    async for request in requests:
        kind = request.WhichOneof("message")
        if header is None:
            if kind != "header":
                raise InvalidArgument.for_field("header", "the first message must be the header")
            header = request.header
            check_header(header.size_bytes, header.sha256, prefix=prefix, limit=limit)
            continue
        if kind != "chunk":
            raise InvalidArgument.for_field("header", "only the first message may be a header")
        chunk = request.chunk
        if len(chunk) > MAX_CHUNK_BYTES:
            raise InvalidArgument.for_field(
                "chunk", f"chunks hold at most {MAX_CHUNK_BYTES} bytes, got {len(chunk)}"
            )
        if request.write_offset and request.write_offset != len(buffer):
            raise InvalidArgument.for_field(
                "write_offset",
                f"expected offset {len(buffer)}, got {request.write_offset}",
            )
        if len(buffer) + len(chunk) > header.size_bytes:
            raise InvalidArgument.for_field(
                f"{prefix}.size_bytes",
                f"more than the declared {header.size_bytes} bytes arrived",
            )
        buffer.extend(chunk)
        digest.update(chunk)
    if header is None:
        raise InvalidArgument.for_field("header", "required: the stream carried no header")
    if len(buffer) != header.size_bytes:
        raise InvalidArgument.for_field(
            f"{prefix}.size_bytes",
            f"declared {header.size_bytes} bytes, but {len(buffer)} arrived",
        )
    actual = digest.hexdigest()
    if actual != header.sha256:
        raise InvalidArgument.for_field(
            f"{prefix}.sha256", f"declared {header.sha256}, but the package hashes to {actual}"
        )
    return Upload(header=header, data=bytes(buffer), sha256=actual)
