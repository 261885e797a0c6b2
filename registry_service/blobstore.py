"""Package blobs, addressed by the sha256 of their bytes (keys `sha256/<hex>`).

Two implementations of one contract (`BlobStore`), tested with the same tests:
- `LocalBlobStore(root)`: a directory; each write goes to a temp file in the same directory,
  is fsynced, renamed over the key atomically, and the directory is fsynced.
- `S3BlobStore(bucket, endpoint_url=...)`: any S3 API (AWS, MinIO, moto) through boto3.

Writes are idempotent and verified: the bytes must hash to the key (`BlobDigestMismatch`, an
INVALID_ARGUMENT, otherwise, and nothing is stored). Reads are verified too: a stored blob
whose bytes no longer match its key raises `DataLoss`; a streamed read holds back its last
chunk until the whole blob has been hashed, so corrupt bytes never end a stream successfully.
The registry writes the blob first and commits metadata after; `collect_orphans` removes
blobs that no row points to once they are old enough not to belong to an upload in flight.
Only server-computed sha256 hex strings become keys: no client-supplied path reaches storage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar, runtime_checkable

from lwdock.errors import DataLoss, InvalidArgument, NotFound, OutOfRange, Unavailable

if TYPE_CHECKING:
    from collections.abc import Generator

BlobSource = bytes | bytearray | memoryview | BinaryIO | os.PathLike[str]
CHUNK_SIZE = 1 << 20
KEY_PREFIX = "sha256/"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
R = TypeVar("R")


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    # Last write (UTC), used by garbage collection.
    modified: datetime


class BlobDigestMismatch(InvalidArgument):
    """The bytes offered for a key do not hash to it; nothing was stored."""

    def __init__(self, expected: str, actual: str, size: int) -> None:
        super().__init__(
            f"the {size} bytes received have sha256 {actual}, not the declared {expected}",
            reason="SHA256_MISMATCH",
            metadata={"expected_sha256": expected, "actual_sha256": actual},
        )
        self.expected = expected
        self.actual = actual
        self.size = size


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, sha256: str, data: BlobSource) -> None:
        """Store `data` under its sha256 (idempotent); BlobDigestMismatch if it differs."""
        ...

    async def get(self, sha256: str) -> bytes:
        """The whole blob, verified. NotFound; DataLoss when the stored bytes are corrupt."""
        ...

    def read(
        self,
        sha256: str,
        offset: int = 0,
        length: int | None = None,
        *,
        chunk_size: int = CHUNK_SIZE,
        verify: bool = True,
    ) -> AsyncIterator[bytes]:
        """Stream bytes [offset, offset + length) (length None: to the end). OutOfRange when
        offset < 0 or > size. `verify` hashes the whole blob on the way (reading it all) and
        raises DataLoss instead of yielding the last chunk when it does not match."""
        ...

    async def exists(self, sha256: str) -> bool: ...

    async def size(self, sha256: str) -> int:
        """Size in bytes; NotFound."""
        ...

    async def stat(self, sha256: str) -> BlobInfo | None: ...

    async def delete(self, sha256: str) -> bool:
        """Remove the blob; False when it was not there."""
        ...

    def list_blobs(self) -> AsyncIterator[BlobInfo]: ...

    def list_keys(self) -> AsyncIterator[str]:
        """sha256 hex of every stored blob."""
        ...


def blob_key(sha256: str) -> str:
    """`sha256/<hex>`; InvalidArgument for anything but 64 lowercase hex digits."""
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise InvalidArgument.for_field("sha256", "must be 64 lowercase hex digits")
    return KEY_PREFIX + sha256


def _data_loss(sha256: str, detail: str) -> DataLoss:
    return DataLoss(
        f"blob {KEY_PREFIX}{sha256} is corrupt: {detail}",
        metadata={"resource_type": "Blob", "resource_name": KEY_PREFIX + sha256},
    )


def _not_found(sha256: str) -> NotFound:
    return NotFound("Blob", KEY_PREFIX + sha256)


def _iter_source(data: BlobSource, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])
        return
    if isinstance(data, os.PathLike):
        with open(data, "rb") as handle:
            yield from _iter_source(handle, chunk_size)
        return
    while chunk := data.read(chunk_size):
        yield chunk


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class _Limited:
    """A file object that reads at most `remaining` bytes."""

    def __init__(self, handle: BinaryIO, remaining: int | None) -> None:
        self._handle = handle
        self._remaining = remaining

    def read(self, size: int, /) -> bytes:
        if self._remaining is not None:
            size = min(size, self._remaining)
            if size <= 0:
                return b""
        chunk = self._handle.read(size)
        if self._remaining is not None:
            self._remaining -= len(chunk)
        return chunk

    def close(self) -> None:
        self._handle.close()


class _BaseBlobStore:
    """The verified read path and the async surface, over a backend's blocking primitives."""

    def _stat_sync(self, sha256: str) -> BlobInfo | None:
        raise NotImplementedError

    def _open_sync(self, sha256: str, start: int, stop: int | None) -> _Reader:
        """A reader of bytes [start, stop) (stop None: to the end)."""
        raise NotImplementedError

    def _put_sync(self, sha256: str, data: BlobSource) -> None:
        raise NotImplementedError

    def _delete_sync(self, sha256: str) -> bool:
        raise NotImplementedError

    def _list_sync(self) -> Iterator[BlobInfo]:
        raise NotImplementedError

    @staticmethod
    async def _run(func: Callable[..., R], *args: Any) -> R:
        return await asyncio.to_thread(func, *args)

    async def put(self, sha256: str, data: BlobSource) -> None:
        blob_key(sha256)
        await self._run(self._put_sync, sha256, data)

    async def stat(self, sha256: str) -> BlobInfo | None:
        blob_key(sha256)
        return await self._run(self._stat_sync, sha256)

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def size(self, sha256: str) -> int:
        info = await self.stat(sha256)
        if info is None:
            raise _not_found(sha256)
        return info.size

    async def delete(self, sha256: str) -> bool:
        blob_key(sha256)
        return await self._run(self._delete_sync, sha256)

    async def get(self, sha256: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(sha256)])

    async def read(
        self,
        sha256: str,
        offset: int = 0,
        length: int | None = None,
        *,
        chunk_size: int = CHUNK_SIZE,
        verify: bool = True,
    ) -> AsyncIterator[bytes]:
        blob_key(sha256)
        if chunk_size <= 0:
            raise InvalidArgument.for_field("chunk_size", "must be positive")
        if length is not None and length < 0:
            raise InvalidArgument.for_field("read_limit", "must not be negative")
        if offset < 0:
            raise OutOfRange(f"read offset {offset} is negative")
        info = await self._run(self._stat_sync, sha256)
        if info is None:
            raise _not_found(sha256)
        if offset > info.size:
            raise OutOfRange(f"read offset {offset} is past the end ({info.size} bytes)")
        end = info.size if length is None else min(info.size, offset + length)
        # Verifying reads the whole blob; otherwise only the range.
        position = 0 if verify else offset
        reader = await self._run(self._open_sync, sha256, position, None if verify else end)
        digest = hashlib.sha256()
        pending: bytes | None = None
        try:
            while verify or position < end:
                chunk = await self._run(reader.read, chunk_size)
                if not chunk:
                    break
                if verify:
                    digest.update(chunk)
                low, high = max(offset, position), min(end, position + len(chunk))
                if high > low:
                    if pending is not None:
                        yield pending
                    pending = chunk[low - position : high - position]
                position += len(chunk)
        finally:
            await self._run(reader.close)
        if verify:
            if position != info.size:
                raise _data_loss(sha256, f"{position} bytes stored, {info.size} expected")
            actual = digest.hexdigest()
            if actual != sha256:
                raise _data_loss(sha256, f"stored bytes hash to {actual}")
        elif position < end:
            raise _data_loss(sha256, f"blob ends at {position}, before {end}")
        if pending is not None:
            yield pending

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        iterator = self._list_sync()
        sentinel: Any = object()
        while True:
            item = await self._run(next, iterator, sentinel)
            if item is sentinel:
                return
            yield item

    async def list_keys(self) -> AsyncIterator[str]:
        async for info in self.list_blobs():
            yield info.sha256


# ---------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore(_BaseBlobStore):
    """Blobs as read-only files `root/sha256/<hex>`."""

    TEMP_PREFIX = ".tmp-"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._dir = self.root / KEY_PREFIX.rstrip("/")
        self._dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def _stat_sync(self, sha256: str) -> BlobInfo | None:
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(sha256, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _open_sync(self, sha256: str, start: int, stop: int | None) -> _Reader:
        try:
            handle = open(self.path(sha256), "rb")  # closed by the reader
        except FileNotFoundError:
            raise _not_found(sha256) from None
        handle.seek(start)
        return _Limited(handle, None if stop is None else max(0, stop - start))

    def _put_sync(self, sha256: str, data: BlobSource) -> None:
        fd, temp_name = tempfile.mkstemp(dir=self._dir, prefix=self.TEMP_PREFIX)
        temp: Path | None = Path(temp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in _iter_source(data):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != sha256:
                raise BlobDigestMismatch(sha256, actual, size)
            os.chmod(temp_name, 0o444)
            # Atomic: readers see the old complete file or the new complete file.
            os.replace(temp_name, self.path(sha256))
            temp = None
            _fsync_dir(self._dir)
        finally:
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()

    def _delete_sync(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self._dir)
        return True

    def _list_sync(self) -> Iterator[BlobInfo]:
        with os.scandir(self._dir) as entries:
            names = sorted(e.name for e in entries if _HEX64.match(e.name))
        for name in names:
            info = self._stat_sync(name)
            if info is not None:
                yield info

    def remove_stale_temp_files(self, older_than_s: float) -> int:
        """Delete temp files left by writers that died; returns how many."""
        cutoff = datetime.now(UTC).timestamp() - older_than_s
        removed = 0
        for entry in self._dir.glob(self.TEMP_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed


# ---------------------------------------------------------------------------------------------


class S3BlobStore(_BaseBlobStore):
    """Blobs as objects `<prefix>sha256/<hex>` of one bucket, through boto3.

    Single-part writes carry Content-MD5 (the server rejects bytes damaged in transit); bigger
    ones go multipart. The object's metadata records its sha256.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        prefix: str = "",
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        addressing_style: str | None = None,
        multipart_threshold: int = 64 << 20,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._multipart_threshold = multipart_threshold
        if client is None:
            style = addressing_style or ("path" if endpoint_url else "auto")
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region_name,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                config=Config(
                    s3={"addressing_style": style},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
        self._client = client

    def key(self, sha256: str) -> str:
        return self.prefix + blob_key(sha256)

    @contextlib.contextmanager
    def _errors(self, sha256: str | None = None) -> Generator[None, None, None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if sha256 is not None and (code in ("NoSuchKey", "NotFound", "404") or status == 404):
                raise _not_found(sha256) from exc
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
                raise Unavailable(f"blob store unavailable: {code or status}") from exc
            raise
        except BotoCoreError as exc:  # connection refused, timeouts, broken responses
            raise Unavailable(f"blob store unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (development and tests)."""
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) != 404:
                    raise
                self._client.create_bucket(Bucket=self.bucket)

    def _stat_sync(self, sha256: str) -> BlobInfo | None:
        try:
            with self._errors(sha256):
                head = self._client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except NotFound:
            return None
        return BlobInfo(sha256, int(head["ContentLength"]), head["LastModified"])

    def _open_sync(self, sha256: str, start: int, stop: int | None) -> _Reader:
        if stop is not None and stop <= start:
            return _Limited(io.BytesIO(), 0)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if start > 0 or stop is not None:
            request["Range"] = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
        with self._errors(sha256):
            response = self._client.get_object(**request)
        return _S3Body(response["Body"], self, sha256)

    def _put_sync(self, sha256: str, data: BlobSource) -> None:
        metadata = {"sha256": sha256}
        if isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
            actual = hashlib.sha256(body).hexdigest()
            if actual != sha256:
                raise BlobDigestMismatch(sha256, actual, len(body))
            with self._errors():
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(sha256),
                    Body=body,
                    ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
                    Metadata=metadata,
                )
            return
        # Stream once into a private spool while hashing, so what is uploaded is exactly
        # what was verified, then upload from the spool.
        with tempfile.TemporaryFile() as spool:
            digest, md5, size = hashlib.sha256(), hashlib.md5(), 0
            for chunk in _iter_source(data):
                digest.update(chunk)
                md5.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            actual = digest.hexdigest()
            if actual != sha256:
                raise BlobDigestMismatch(sha256, actual, size)
            spool.flush()
            spool.seek(0)
            with self._errors():
                if size <= self._multipart_threshold:
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=self.key(sha256),
                        Body=spool,
                        ContentLength=size,
                        ContentMD5=base64.b64encode(md5.digest()).decode(),
                        Metadata=metadata,
                    )
                else:
                    from boto3.s3.transfer import TransferConfig

                    self._client.upload_fileobj(
                        spool,
                        self.bucket,
                        self.key(sha256),
                        ExtraArgs={"Metadata": metadata},
                        Config=TransferConfig(multipart_threshold=self._multipart_threshold),
                    )

    def _delete_sync(self, sha256: str) -> bool:
        existed = self._stat_sync(sha256) is not None
        with self._errors():
            self._client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return existed

    def _list_sync(self) -> Iterator[BlobInfo]:
        prefix = self.prefix + KEY_PREFIX
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        with self._errors():
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(prefix) :]
                    if _HEX64.match(name):
                        yield BlobInfo(name, int(item["Size"]), item["LastModified"])


class _S3Body:
    """A get_object body whose transport errors surface as lwdock errors."""

    def __init__(self, body: Any, store: S3BlobStore, sha256: str) -> None:
        self._body = body
        self._store = store
        self._sha256 = sha256

    def read(self, size: int, /) -> bytes:
        with self._store._errors(self._sha256):
            return bytes(self._body.read(size))

    def close(self) -> None:
        self._body.close()


# ---------------------------------------------------------------------------------------------


async def collect_orphans(
    store: BlobStore,
    referenced: Collection[str],
    older_than_s: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete blobs that no row points to and that were last written more than
    `older_than_s` ago (younger ones may belong to an upload whose metadata is not committed
    yet: keep `older_than_s` above the longest upload). Returns the sha256 deleted (or, with
    `dry_run`, that would be)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_s)
    referenced_set = set(referenced)
    orphans = [
        info.sha256
        async for info in store.list_blobs()
        if info.sha256 not in referenced_set and info.modified <= cutoff
    ]
    if not dry_run:
        for sha256 in orphans:
            await store.delete(sha256)
    return orphans


__all__ = [
    "CHUNK_SIZE",
    "BlobDigestMismatch",
    "BlobInfo",
    "BlobSource",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "blob_key",
    "collect_orphans",
]
