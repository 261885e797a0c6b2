"""Configuration from `LWDOCK_*` environment variables (and `.env`), overridable by flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {"spec": 50051, "registry": 50052, "search": 50053, "reuse": 50054}


class Settings(BaseSettings):
    """Settings shared by every service; each service reads the ones it needs."""

    model_config = SettingsConfigDict(env_prefix="LWDOCK_", env_file=".env", extra="ignore")

    # Where the suite keeps its state: embedded PostgreSQL, blobs, the local admin token.
    home: Path = Field(default_factory=lambda: Path.home() / ".lwdock")
    host: str = "127.0.0.1"
    # Port of the service being started; None = the service's default, 0 = any free port.
    port: int | None = None
    # Prometheus /metrics over HTTP; None = off, 0 = any free port.
    metrics_port: int | None = None

    # PostgreSQL DSN; unset = the embedded server under `home` (suite) .
    database_url: str | None = None
    # Local blob directory; unset = `home`/blobs.
    blob_dir: Path | None = None
    # Blob store: unset = the local directory above; `s3://bucket/prefix` = an S3 bucket.
    blob_url: str | None = None
    # S3 API endpoint (MinIO, moto); unset = AWS. Credentials come from the standard AWS
    # chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles), never here.
    s3_endpoint_url: str | None = None
    # S3 region; unset = the AWS default (AWS_REGION / AWS_DEFAULT_REGION, profile).
    s3_region: str | None = None

    # Addresses the services use to reach each other.
    spec_address: str = f"127.0.0.1:{DEFAULT_PORTS['spec']}"
    registry_address: str = f"127.0.0.1:{DEFAULT_PORTS['registry']}"
    search_address: str = f"127.0.0.1:{DEFAULT_PORTS['search']}"
    reuse_address: str = f"127.0.0.1:{DEFAULT_PORTS['reuse']}"

    # Largest message a server accepts (specs are bounded; anything bigger streams).
    max_receive_message_bytes: int = 64 * 1024 * 1024
    # Calls beyond this many at once get RESOURCE_EXHAUSTED; None = unlimited.
    max_concurrent_rpcs: int | None = None
    # Graceful shutdown: NOT_SERVING for `drain_delay_s`, then `grace_s` for calls in flight.
    drain_delay_s: float = 0.5
    grace_s: float = 5.0

    # Token auth: a JSON file of sha256(token) -> {principal, role}; None = no tokens known.
    tokens_file: Path | None = None
    # The bearer token this service presents when it calls another one (registry -> reuse
    # checks, search -> registry change feed, reuse -> registry packages); None = anonymous.
    service_token: str | None = None
    # Calls without a token run as "anonymous" (reads in development); off = UNAUTHENTICATED.
    allow_anonymous: bool = True
    # Serve reflection to anonymous callers too (grpcurl without a token).
    reflection_public: bool = True

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # OpenTelemetry tracing of every RPC (lwdock.tracing): none, console (spans as JSON on
    # stdout), or otlp (OTEL_EXPORTER_OTLP_* variables; needs opentelemetry-exporter-otlp).
    otel_exporter: Literal["none", "console", "otlp"] = "none"

    # registry_service: largest learnware package accepted (RESOURCE_EXHAUSTED beyond).
    max_package_bytes: int = 512 * 1024**2

    # spec_service: largest table accepted for a fit (RESOURCE_EXHAUSTED beyond).
    fit_max_bytes: int = 2 * 1024**3
    fit_max_rows: int = 20_000_000
    # spec_service: where fits run: auto (a CUDA GPU when torch sees one, else the CPU), cpu,
    # cuda or cuda:N.
    fit_device: str = "auto"

    # reuse_service: run model code without a sandbox (development only; health reports it).
    allow_unsandboxed: bool = False
    # reuse_service: warm sandbox workers kept (one per package, LRU), each worker's address
    # space limit, and the wall-clock limit of one load or predict in a sandbox.
    reuse_max_workers: int = 8
    reuse_worker_memory_mib: int = 4096
    reuse_call_timeout_s: float = 60.0

    # search_service: directory of the index snapshot; unset = `home`/search.
    search_snapshot_dir: Path | None = None
    # search_service: random-Fourier-feature dimensions of the index (with the seed, its
    # version): FAISS vectors, and the fine embedding that re-scores FAISS's candidates.
    search_embedding_dimension: int = 256
    search_rescore_dimension: int = 1024
    # search_service: processes serving the port (SO_REUSEPORT; the kernel spreads the
    # clients' connections over them), each with its own index following the registry; a
    # supervisor starts them and restarts one that dies. A search holds one core, and one
    # process runs one search at a time (the GIL), so this is how searches use more cores.
    search_workers: int = 1
    # search_service: searches one process runs at once, in worker threads (more only
    # contend for the GIL).
    search_threads: int = 2
    # Set by the search supervisor for its workers: this worker's number (0 writes the
    # index snapshot), and binding with SO_REUSEPORT so that the workers share the port.
    search_worker_index: int | None = None
    share_port: bool = False

    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    def resolved_search_snapshot_dir(self) -> Path:
        return self.search_snapshot_dir or self.home / "search"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every service accepts; they override the environment."""
    parser.add_argument("--host", help="address to bind (LWDOCK_HOST)")
    parser.add_argument("--port", type=int, help="port to bind, 0 = any (LWDOCK_PORT)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (LWDOCK_METRICS_PORT)")
    parser.add_argument("--database-url", help="PostgreSQL DSN (LWDOCK_DATABASE_URL)")
    parser.add_argument("--home", type=Path, help="state directory (LWDOCK_HOME)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (LWDOCK_LOG_LEVEL)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in Settings.model_fields
    }
    return Settings(**overrides)
