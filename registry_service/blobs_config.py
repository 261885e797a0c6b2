"""Which blob store the registry uses, from settings.

- `LWDOCK_BLOB_URL` unset: `LocalBlobStore` under `LWDOCK_BLOB_DIR` (default `home`/blobs).
- `LWDOCK_BLOB_URL=s3://bucket/prefix`: `S3BlobStore` on `bucket`, keys `prefix/sha256/<hex>`;
  endpoint `LWDOCK_S3_ENDPOINT_URL` (unset = AWS), region `LWDOCK_S3_REGION`. Credentials come
  from boto3's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles).

Any other URL is a startup error (`BlobConfigError`, a ValueError), raised by `build_app`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from lwdock.settings import Settings
from registry_service.blobstore import BlobStore, LocalBlobStore, S3BlobStore

SUPPORTED_SCHEMES = ("s3",)


class BlobConfigError(ValueError):
    """LWDOCK_BLOB_URL (or a related setting) cannot be used."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    # "" or ends with "/": the store's keys are `<prefix>sha256/<hex>`.
    prefix: str


def parse_blob_url(url: str) -> S3Location:
    """`s3://bucket[/prefix]` -> S3Location; BlobConfigError for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in SUPPORTED_SCHEMES:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise BlobConfigError(
            f"LWDOCK_BLOB_URL={url!r}: unsupported scheme ({shown}); "
            "use s3://bucket/prefix, or leave it unset for the local directory LWDOCK_BLOB_DIR"
        )
    if not parts.netloc:
        raise BlobConfigError(f"LWDOCK_BLOB_URL={url!r}: no bucket; use s3://bucket/prefix")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise BlobConfigError(
            f"LWDOCK_BLOB_URL={url!r}: only s3://bucket/prefix is accepted (no credentials, "
            "port, query or fragment; the endpoint is LWDOCK_S3_ENDPOINT_URL)"
        )
    prefix = parts.path.strip("/")
    return S3Location(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store `settings` name; BlobConfigError when LWDOCK_BLOB_URL is unusable.
    Makes no network call: see `check_blob_store` for the bucket."""
    if not settings.blob_url:
        return LocalBlobStore(settings.resolved_blob_dir())
    location = parse_blob_url(settings.blob_url)
    # No keys passed: boto3's default credential chain (environment, profile, role).
    return S3BlobStore(
        location.bucket,
        prefix=location.prefix,
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
    )


async def check_blob_store(store: BlobStore, *, create_bucket: bool = False) -> None:
    """For an S3 store, check (off the event loop) that the bucket is reachable; with
    `create_bucket`, create it when missing (development and tests). Raises the store's
    errors (Unavailable when unreachable; botocore's ClientError for a missing bucket or
    denied access). Nothing to check for a local directory."""
    if not isinstance(store, S3BlobStore):
        return
    if create_bucket:
        await asyncio.to_thread(store.ensure_bucket)
        return

    def head() -> None:
        with store._errors():
            store._client.head_bucket(Bucket=store.bucket)

    await asyncio.to_thread(head)


__all__ = [
    "BlobConfigError",
    "S3Location",
    "check_blob_store",
    "make_blob_store",
    "parse_blob_url",
]
