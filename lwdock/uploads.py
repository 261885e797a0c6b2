"""Client side of a package upload: the CreateLearnware request stream for a zip."""

from __future__ import annotations

import hashlib
import io
import zipfile

from lwdock.registry.v1 import registry_service_pb2, resources_pb2

UPLOAD_CHUNK_BYTES = 256 * 1024  # within the server's 1 MiB limit, large enough for speed


def create_learnware_requests(
    data: bytes,
    *,
    semantic_json: str,
    request_id: str = "",
    sha256: str | None = None,
    size: int | None = None,
    chunk_bytes: int = UPLOAD_CHUNK_BYTES,
) -> list[registry_service_pb2.CreateLearnwareRequest]:
    """The header (semantic spec as the reference's JSON, request_id, size, sha256), then the
    zip in chunks. `sha256` / `size` override the computed values (to test the server)."""
    header = resources_pb2.UploadHeader(
        request_id=request_id,
        semantic_specification_json=semantic_json,
        size_bytes=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
    )
    messages = [registry_service_pb2.CreateLearnwareRequest(header=header)]
    for start in range(0, len(data), chunk_bytes):
        chunk = data[start : start + chunk_bytes]
        messages.append(registry_service_pb2.CreateLearnwareRequest(chunk=chunk))
    return messages


def rezip(data: bytes, comment: bytes) -> bytes:
    """The same package with another zip comment: the same content under another sha256 (the
    registry refuses a package whose bytes it already holds), for tests and benchmarks."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.comment = comment
    return out.getvalue()
