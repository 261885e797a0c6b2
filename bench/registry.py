"""Benchmark: the registry service over gRPC (uploads, List and Get at 10k learnwares).

    python bench/registry.py            # 500 uploads per concurrency, then 10,000 learnwares
    python bench/registry.py --quick    # 200 uploads per concurrency, 2,000 learnwares; JSON last

Starts an embedded PostgreSQL in a temporary directory (or creates a scratch database in
`--database-url`, dropped at the end) and a real registry server in this process on
127.0.0.1:<any port> (`build_app` + `start`, a tokens file with one developer token, a
LocalBlobStore in the temporary directory), waits until it reports SERVING, then measures:

- Uploads: N distinct packages (the reference fixture `learnware_digits_svc.zip`, rezipped with
  another zip comment so each has its own sha256; all built before timing) sent as full
  CreateLearnware streams (header + 256 KiB chunks, `authorization: Bearer <developer token>`)
  by C concurrent clients, each with its own channel, for C in {1, 8}. Each call is the whole
  upload: package validation, blob write and the database transaction. A few untimed uploads
  warm up first. uploads/s = N / wall time of the batch; latency per call.
- List and Get at R learnwares: rows are bulk-inserted straight through
  `Repository.create_learnware` (8 concurrent writers on their own pool; one valid semantic with a
  unique Name per row, the fixture's specification, a synthetic unique sha256; no blobs, which
  List does not read) until the table holds R learnwares, then over gRPC: the first page
  (page_size 50), a filtered first page (`state = PENDING AND data_type = "Table"`), every page
  of a walk through all R rows with page tokens, and GetLearnware of random learnwares.

The clients run in the server's process and event loop (one Python process, as in the tests),
so their own cost is included. The reference (Beimingwu) has no comparable registry to run in a
process: it is an HTTP service backed by MySQL and Redis, so there is no reference column.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import cpu_model  # noqa: E402  (bench/, the script's own folder)

from lwdock.embedded_db import EmbeddedPostgres, scratch_database  # noqa: E402
from lwdock.package import validate_package  # noqa: E402
from lwdock.registry.v1 import registry_service_pb2 as pb  # noqa: E402
from lwdock.registry.v1 import registry_service_pb2_grpc  # noqa: E402
from lwdock.semantic.checker import Semantic  # noqa: E402
from lwdock.server.bootstrap import ServerHandle, start  # noqa: E402
from lwdock.settings import Settings  # noqa: E402
from lwdock.tokens import add_token, new_token  # noqa: E402
from lwdock.uploads import create_learnware_requests, rezip  # noqa: E402
from registry_service.repository import PackageInfo, Repository  # noqa: E402
from registry_service.server import SERVICE_NAME, build_app  # noqa: E402
from registry_service.service import new_specifications  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "reference"
ZIP_PATH = FIXTURES / "learnware_digits_svc.zip"
SEMANTIC_PATH = FIXTURES / "learnware_digits_svc.semantic.json"
CHUNK = 256 * 1024
CONCURRENCY = (1, 8)
WARMUP_UPLOADS = 5
BULK_WRITERS = 8
PAGE_SIZE = 50
FILTER = 'state = PENDING AND data_type = "Table"'
FULL = {"uploads": 500, "rows": 10_000, "repeats": 100, "gets": 500}
QUICK = {"uploads": 200, "rows": 2_000, "repeats": 50, "gets": 200}
DEVELOPER = "users/bench"


def _log(message: str) -> None:
    print(f"[registry] {message}", file=sys.stderr, flush=True)


# --- packages ------------------------------------------------------------------------------


def upload_requests(data: bytes, semantic_json: str) -> list[pb.CreateLearnwareRequest]:
    return create_learnware_requests(
        data, semantic_json=semantic_json, request_id=str(uuid.uuid4()), chunk_bytes=CHUNK
    )


# --- the server ----------------------------------------------------------------------------


@contextlib.contextmanager
def database(url: str | None, work: Path) -> Any:
    """(database URL, description): a scratch database, in an embedded PostgreSQL if no URL."""
    if url:
        with scratch_database(url, "lwdock_bench") as scratch:
            yield scratch, "PostgreSQL at --database-url (scratch database)"
        return
    _log("starting an embedded PostgreSQL")
    server = EmbeddedPostgres.start(work / "pgdata")
    try:
        yield server.url, "embedded PostgreSQL (Unix socket, temp dir)"
    finally:
        server.stop()


@dataclass
class Registry:
    handle: ServerHandle
    settings: Settings
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def developer_token(home: Path) -> tuple[Path, str]:
    """(tokens file, token): a tokens file under `home` with one developer token."""
    home.mkdir(parents=True, exist_ok=True)
    tokens_file = home / "tokens.json"
    token = new_token()
    add_token(tokens_file, token, DEVELOPER, "developer")
    return tokens_file, token


@contextlib.asynccontextmanager
async def registry(database_url: str, home: Path) -> AsyncIterator[Registry]:
    tokens_file, token = developer_token(home)
    settings = Settings(
        home=home,
        port=0,
        database_url=database_url,
        blob_dir=home / "blobs",
        tokens_file=tokens_file,
        drain_delay_s=0.0,
        grace_s=1.0,
        log_level="WARNING",
    )
    handle = await start(build_app(settings), settings)
    try:
        async with grpc.aio.insecure_channel(handle.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(600):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the registry never became SERVING")
        yield Registry(handle, settings, token)
    finally:
        await handle.stop(settings)


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Stat:
    """Latencies (seconds) of one kind of call, and the wall time of the batch."""

    name: str
    latencies: list[float]
    wall_s: float
    note: str = ""

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    @property
    def p50_ms(self) -> float:
        return self.pct_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.pct_ms(99)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.latencies)) * 1000

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.wall_s


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await call()
    return time.perf_counter() - began, result


async def upload_batch(
    reg: Registry, packages: Sequence[bytes], semantic_json: str, clients: int
) -> Stat:
    """Upload every package once with `clients` concurrent clients (one channel each)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in packages:
        queue.put_nowait(data)
    latencies: list[float] = []

    async def client() -> None:
        async with grpc.aio.insecure_channel(reg.handle.address) as channel:
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            await channel.channel_ready()
            while True:
                try:
                    data = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                requests = upload_requests(data, semantic_json)
                seconds, _ = await timed(
                    lambda r=requests: stub.CreateLearnware(r, metadata=reg.metadata)
                )
                latencies.append(seconds)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - began
    return Stat(f"CreateLearnware, {clients} client(s)", latencies, wall)


async def bulk_insert(database_url: str, target: int, existing: int, semantic_json: str) -> Stat:
    """Insert learnwares through Repository.create_learnware until `target` rows exist."""
    semantic = Semantic.from_reference_dict(json.loads(semantic_json))
    validated = validate_package(ZIP_PATH.read_bytes(), semantic)
    specs = list(new_specifications(validated))
    base = semantic.to_reference_dict()
    todo = max(0, target - existing)
    numbers = iter(range(todo))
    latencies: list[float] = []
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=BULK_WRITERS, max_size=BULK_WRITERS, kwargs={"autocommit": True}
    )
    async with pool:
        repo = Repository(pool)

        async def writer() -> None:
            for i in numbers:
                row_semantic = {**base, "Name": {"Values": f"bench-{i:06d}", "Type": "String"}}
                sha = hashlib.sha256(f"bench-row-{i}".encode()).hexdigest()
                began = time.perf_counter()
                await repo.create_learnware(
                    owner=DEVELOPER,
                    semantic=row_semantic,
                    package=PackageInfo(sha, 1000 + i),
                    specifications=specs,
                )
                latencies.append(time.perf_counter() - began)
                if len(latencies) % 2000 == 0:
                    _log(f"bulk insert: {len(latencies):,}/{todo:,}")

        began = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(BULK_WRITERS)))
        wall = time.perf_counter() - began
    return Stat(f"Repository.create_learnware, {BULK_WRITERS} writers", latencies, wall)


async def list_and_get(reg: Registry, repeats: int, gets: int) -> tuple[list[Stat], int, int]:
    """(stats, total rows, rows matching FILTER)."""
    async with grpc.aio.insecure_channel(reg.handle.address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        md = reg.metadata

        async def repeat(name: str, request: pb.ListLearnwaresRequest) -> tuple[Stat, Any]:
            await stub.ListLearnwares(request, metadata=md)  # warm-up
            latencies, reply = [], None
            began = time.perf_counter()
            for _ in range(repeats):
                seconds, reply = await timed(lambda: stub.ListLearnwares(request, metadata=md))
                latencies.append(seconds)
            return Stat(name, latencies, time.perf_counter() - began), reply

        first, first_reply = await repeat(
            f"ListLearnwares first page (page_size {PAGE_SIZE})",
            pb.ListLearnwaresRequest(page_size=PAGE_SIZE),
        )
        filtered, filtered_reply = await repeat(
            f"ListLearnwares filtered page ({FILTER})",
            pb.ListLearnwaresRequest(page_size=PAGE_SIZE, filter=FILTER),
        )
        total, matching = first_reply.total_size, filtered_reply.total_size
        filtered.note = f"{matching:,} of {total:,} match"

        ids: list[str] = []
        latencies: list[float] = []
        token = ""
        began = time.perf_counter()
        while True:
            request = pb.ListLearnwaresRequest(page_size=PAGE_SIZE, page_token=token)
            seconds, reply = await timed(lambda r=request: stub.ListLearnwares(r, metadata=md))
            latencies.append(seconds)
            ids.extend(lw.name for lw in reply.learnwares)
            token = reply.next_page_token
            if not token:
                break
        walk = Stat(
            f"ListLearnwares walk, every page (page_size {PAGE_SIZE})",
            latencies,
            time.perf_counter() - began,
            f"{len(latencies)} pages, {len(ids):,} rows",
        )
        if len(ids) != total or len(set(ids)) != total:
            raise RuntimeError(f"page walk saw {len(ids)} rows ({len(set(ids))} distinct)")

        rng = random.Random(0)
        names = [rng.choice(ids) for _ in range(gets)]
        await stub.GetLearnware(pb.GetLearnwareRequest(name=names[0]), metadata=md)
        latencies = []
        began = time.perf_counter()
        for name in names:
            request = pb.GetLearnwareRequest(name=name)
            seconds, _ = await timed(lambda r=request: stub.GetLearnware(r, metadata=md))
            latencies.append(seconds)
        get = Stat("GetLearnware (random learnwares)", latencies, time.perf_counter() - began)
    return [first, filtered, walk, get], total, matching


# --- output --------------------------------------------------------------------------------


def upload_table(stats: Sequence[tuple[int, Stat]]) -> str:
    lines = [
        "| clients | uploads | wall s | uploads/s | p50 ms | p99 ms | mean ms |",
        "|" + "---|" * 7,
    ]
    for clients, stat in stats:
        lines.append(
            f"| {clients} | {len(stat.latencies):,} | {stat.wall_s:.2f} | {stat.per_s:.1f} "
            f"| {stat.p50_ms:.1f} | {stat.p99_ms:.1f} | {stat.mean_ms:.1f} |"
        )
    return "\n".join(lines)


def read_table(stats: Sequence[Stat]) -> str:
    lines = ["| call | calls | p50 ms | p99 ms | mean ms | note |", "|" + "---|" * 6]
    for stat in stats:
        lines.append(
            f"| {stat.name} | {len(stat.latencies):,} | {stat.p50_ms:.2f} | {stat.p99_ms:.2f} "
            f"| {stat.mean_ms:.2f} | {stat.note} |"
        )
    return "\n".join(lines)


# --- entry point ---------------------------------------------------------------------------


async def bench(sizes: dict[str, int], database_url: str | None, command: str) -> int:
    started = time.perf_counter()
    semantic_json = SEMANTIC_PATH.read_text()
    fixture = ZIP_PATH.read_bytes()
    count = WARMUP_UPLOADS + sizes["uploads"] * len(CONCURRENCY)
    _log(f"building {count} distinct packages")
    packages = [rezip(fixture, f"lwdock-bench-{i}".encode()) for i in range(count)]
    assert len({hashlib.sha256(p).hexdigest() for p in packages}) == count
    with tempfile.TemporaryDirectory(prefix="lwdock-bench-registry-") as tmp:
        work = Path(tmp)
        with database(database_url, work) as (url, db_note):
            async with registry(url, work / "home") as reg:
                with psycopg.connect(url) as conn:
                    pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                _log(f"registry SERVING at {reg.handle.address}; warm-up uploads")
                await upload_batch(reg, packages[:WARMUP_UPLOADS], semantic_json, 1)
                uploads: list[tuple[int, Stat]] = []
                offset = WARMUP_UPLOADS
                for clients in CONCURRENCY:
                    batch = packages[offset : offset + sizes["uploads"]]
                    offset += len(batch)
                    _log(f"uploading {len(batch)} packages with {clients} client(s)")
                    uploads.append(
                        (clients, await upload_batch(reg, batch, semantic_json, clients))
                    )
                _log(f"bulk-inserting learnwares up to {sizes['rows']:,}")
                bulk = await bulk_insert(url, sizes["rows"], offset, semantic_json)
                _log("List and Get")
                reads, total, matching = await list_and_get(reg, sizes["repeats"], sizes["gets"])
    seconds = time.perf_counter() - started

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {command} | {now} | {os.cpu_count()} cores, {cpu_model()}")
    print(
        f"# registry in-process on 127.0.0.1, clients in the same process and event loop; "
        f"{db_note}, PostgreSQL {pg_version}"
    )
    print(
        "# reference: none. Beimingwu's registry is an HTTP service backed by MySQL and Redis, "
        "with no comparable in-process server, so there is no reference column"
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# load average at the end: {load} (other processes on the machine skew times)")
    print()
    print(f"Uploads (full CreateLearnware of a {len(fixture) / 1024:.0f} KiB package over gRPC):")
    print()
    print(upload_table(uploads))
    print()
    print(
        f"List and Get at {total:,} learnwares (bulk insert: {len(bulk.latencies):,} rows in "
        f"{bulk.wall_s:.1f} s, {bulk.per_s:.0f} rows/s, p50 {bulk.p50_ms:.1f} ms):"
    )
    print()
    print(read_table(reads))
    first, filtered, walk, get = reads
    by_clients = dict(uploads)
    summary = {
        "uploads_per_s_c1": round(by_clients[1].per_s, 2),
        "uploads_per_s_c8": round(by_clients[8].per_s, 2),
        "upload_p50_ms_c1": round(by_clients[1].p50_ms, 2),
        "upload_p99_ms_c8": round(by_clients[8].p99_ms, 2),
        "list_first_page_p50_ms": round(first.p50_ms, 3),
        "list_filtered_p50_ms": round(filtered.p50_ms, 3),
        "list_walk_page_p50_ms": round(walk.p50_ms, 3),
        "list_walk_page_p99_ms": round(walk.p99_ms, 3),
        "get_p50_ms": round(get.p50_ms, 3),
        "get_p99_ms": round(get.p99_ms, 3),
        "rows": total,
        "filtered_rows": matching,
        "total_seconds": round(seconds, 1),
    }
    print()
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 uploads each, 2,000 rows")
    parser.add_argument("--database-url", help="PostgreSQL server to use (a scratch database)")
    parser.add_argument("--uploads", type=int, help="uploads per concurrency level")
    parser.add_argument("--rows", type=int, help="learnwares for List and Get")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.uploads is not None:
        sizes["uploads"] = args.uploads
    if args.rows is not None:
        sizes["rows"] = args.rows
    logging.basicConfig(level=logging.WARNING)
    command = "python bench/registry.py" + (" --quick" if args.quick else "")
    if args.uploads is not None or args.rows is not None:
        command += f" (uploads {sizes['uploads']}, rows {sizes['rows']})"
    return asyncio.run(bench(sizes, args.database_url, command))


if __name__ == "__main__":
    sys.exit(main())
