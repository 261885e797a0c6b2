"""Observability across services: x-request-id and OpenTelemetry trace context follow a call
from one real server to the next; the registry's check-queue gauge.

A "relay" server (a real lwdock server from `lwdock.server.bootstrap.start`, with one raw
bytes method) calls a real registry through `lwdock.channels.aio_channel`, as search calls the
registry; the registry's own check worker calls a real ReuseService checker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lwdock import tracing
from lwdock.channels import aio_channel
from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.reuse.v1 import reuse_service_pb2
from lwdock.server.bootstrap import ServerHandle, ServiceApp, start
from lwdock.server.context import REQUEST_ID_KEY, downstream_timeout, request_scope
from lwdock.server.logs import JsonFormatter
from lwdock.settings import Settings
from lwdock.tokens import add_token, new_token
from registry_service.server import SERVICE_NAME as REGISTRY
from registry_service.server import build_app as registry_app
from tests.conftest import service_settings, wait_serving
from tests.test_registry_checks import FAST, ScriptedChecker, free_port, serve_checker
from tests.test_registry_service import ZIP, upload_requests

RELAY_SERVICE = "lwdock.test.v1.Relay"
RELAY = f"/{RELAY_SERVICE}/Relay"


def relay_app(registry_address: str) -> ServiceApp:
    """A server whose one method lists learnwares on the registry and answers with the
    x-request-id the registry echoed (JSON bytes)."""

    async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async with aio_channel(registry_address) as channel:
            call = registry_service_pb2_grpc.RegistryServiceStub(channel).ListLearnwares(
                pb.ListLearnwaresRequest(page_size=1), timeout=downstream_timeout(context)
            )
            await call
            trailing = dict(await call.trailing_metadata() or ())
        return json.dumps({"registry_saw": trailing.get(REQUEST_ID_KEY)}).encode()

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(relay)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(RELAY_SERVICE, {"Relay": handler}),)
        )

    return ServiceApp(name="relay", services=[RELAY_SERVICE], register=register)


@dataclass
class Pair:
    settings: Settings
    registry: ServerHandle
    relay: ServerHandle

    async def stop(self) -> None:
        await self.relay.stop(self.settings)
        await self.registry.stop(self.settings)


@pytest.fixture(scope="module")
def module_db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "lwdock_obs") as url:
        yield url


async def start_pair(module_db: str, home: Path) -> Pair:
    settings = service_settings(home, module_db, blob_dir=home / "blobs")
    registry = await start(registry_app(settings), settings)
    async with grpc.aio.insecure_channel(registry.address) as channel:
        await wait_serving(channel, REGISTRY)
    relay = await start(relay_app(registry.address), settings)
    return Pair(settings, registry, relay)


@pytest_asyncio.fixture(scope="module")
async def pair(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    started = await start_pair(module_db, tmp_path_factory.mktemp("obs-home"))
    try:
        yield started
    finally:
        await started.stop()


async def call_relay(
    address: str, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """(the relay's answer, the relay's trailing metadata)."""
    async with aio_channel(address) as channel:
        call = channel.unary_unary(RELAY)(b"", metadata=metadata, timeout=10)
        answer = json.loads(await call)
        return answer, dict(await call.trailing_metadata() or ())


async def test_request_id_is_forwarded_to_the_next_service(pair: Pair) -> None:
    answer, trailing = await call_relay(pair.relay.address, ((REQUEST_ID_KEY, "req-obs-1"),))
    assert trailing[REQUEST_ID_KEY] == "req-obs-1"
    assert answer["registry_saw"] == "req-obs-1"
    # Without one from the caller, the first server makes one and the next sees the same.
    answer, trailing = await call_relay(pair.relay.address)
    assert re.fullmatch(r"[0-9a-f]{32}", trailing[REQUEST_ID_KEY])
    assert answer["registry_saw"] == trailing[REQUEST_ID_KEY]


async def test_every_call_kind_carries_the_token_and_request_id() -> None:
    """lwdock.channels must attach its metadata to streamed calls too (the registry's
    WatchChanges and DownloadLearnware are server-streamed, uploads client-streamed)."""
    seen: list[tuple[str, str | None, str | None]] = []

    def record(kind: str, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        seen.append((kind, metadata.get("authorization"), metadata.get(REQUEST_ID_KEY)))

    async def unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        record("unary_unary", context)
        return b"ok"

    async def unary_stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        record("unary_stream", context)
        yield b"ok"

    async def stream_unary(requests, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[no-untyped-def]
        async for _ in requests:
            pass
        record("stream_unary", context)
        return b"ok"

    async def stream_stream(requests, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        async for _ in requests:
            pass
        record("stream_stream", context)
        yield b"ok"

    server = grpc.aio.server()
    handlers = {
        "UU": grpc.unary_unary_rpc_method_handler(unary_unary),
        "US": grpc.unary_stream_rpc_method_handler(unary_stream),
        "SU": grpc.stream_unary_rpc_method_handler(stream_unary),
        "SS": grpc.stream_stream_rpc_method_handler(stream_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Kinds", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with request_scope("req-kinds"):
            async with aio_channel(f"127.0.0.1:{port}", token="tok-1") as channel:
                await channel.unary_unary("/t.Kinds/UU")(b"x", timeout=5)
                async for _ in channel.unary_stream("/t.Kinds/US")(b"x", timeout=5):
                    pass
                await channel.stream_unary("/t.Kinds/SU")(iter([b"a", b"b"]), timeout=5)
                async for _ in channel.stream_stream("/t.Kinds/SS")(iter([b"a"]), timeout=5):
                    pass
    finally:
        await server.stop(None)
    assert sorted(seen) == sorted(
        (kind, "Bearer tok-1", "req-kinds")
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


async def test_one_trace_across_two_services(
    spans: InMemorySpanExporter, module_db: str, tmp_path: Path
) -> None:
    # Servers and channels made while tracing is on are traced.
    traced = await start_pair(module_db, tmp_path)
    try:
        await call_relay(traced.relay.address, ((REQUEST_ID_KEY, "req-trace-1"),))
    finally:
        await traced.stop()
    finished = [s for s in spans.get_finished_spans() if "Health" not in s.name]
    by_key = {(s.kind, s.name): s for s in finished}
    outer_client = by_key[(SpanKind.CLIENT, RELAY)]
    relay_server = by_key[(SpanKind.SERVER, RELAY.lstrip("/"))]
    inner_client = by_key[(SpanKind.CLIENT, f"/{REGISTRY}/ListLearnwares")]
    registry_server = by_key[(SpanKind.SERVER, f"{REGISTRY}/ListLearnwares")]
    chain = [outer_client, relay_server, inner_client, registry_server]
    assert len({s.context.trace_id for s in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    for server_span in (relay_server, registry_server):
        assert server_span.attributes["lwdock.request_id"] == "req-trace-1"
        assert server_span.attributes["rpc.grpc.status_code"] == 0
    assert registry_server.attributes["rpc.method"] == "ListLearnwares"


async def test_untraced_servers_send_no_trace_context(pair: Pair) -> None:
    # tracing is off for `pair`: no span, and no traceparent reaches the registry.
    assert not tracing.enabled() and tracing.server_interceptors() == []
    assert tracing.client_interceptors() == []


CONSOLE_SCRIPT = """
import asyncio, sys
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lwdock.channels import aio_channel
from lwdock.server.bootstrap import ServiceApp, start
from lwdock.settings import Settings
from lwdock.tokens import add_token, new_token
from lwdock import tracing

async def main():
    settings = Settings(port=0, otel_exporter=sys.argv[1], drain_delay_s=0, grace_s=0.5)
    handle = await start(ServiceApp("console", ["x.v1.X"], lambda server: None), settings)
    async with aio_channel(handle.address) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    await handle.stop(settings)
    tracing.provider().force_flush()

asyncio.run(main())
"""


def test_console_exporter_prints_the_spans_and_otlp_needs_its_package() -> None:
    run = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, "console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout
    assert '"name": "grpc.health.v1.Health/Check"' in printed
    assert '"service.name": "lwdock-console"' in printed
    assert '"kind": "SpanKind.SERVER"' in printed and '"kind": "SpanKind.CLIENT"' in printed
    try:
        import opentelemetry.exporter.otlp  # noqa: F401

        pytest.skip("the OTLP exporter is installed here")  # pragma: no cover
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="opentelemetry-exporter-otlp"):
        tracing.configure("otlp", "test")
    assert not tracing.enabled()


def developer_token(home: Path) -> tuple[Path, tuple[tuple[str, str], ...]]:
    """A tokens file with one developer token; the metadata that sends it."""
    tokens_file, token = home / "tokens.json", new_token()
    add_token(tokens_file, token, "users/dev", "developer")
    return tokens_file, (("authorization", f"Bearer {token}"),)


# -- the registry's check worker: one request id per check, forwarded to reuse ------------------


class _Lines(logging.Handler):
    """Formats records as they are logged (the request id is read from the call's context)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("registry"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_check_worker_calls_reuse_with_the_checks_request_id(
    database_url: str, tmp_path: Path
) -> None:
    seen: list[str] = []

    async def answer(
        request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        seen.append(str(dict(context.invocation_metadata() or ()).get(REQUEST_ID_KEY, "")))
        return reuse_service_pb2.CheckLearnwareResponse(passed=True)

    port = free_port()
    checker = await serve_checker(port, ScriptedChecker(answer))
    lines = _Lines()
    logger = logging.getLogger("lwdock.registry.checks")
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    with scratch_database(database_url, "lwdock_obs_check") as url:
        tokens_file, auth = developer_token(tmp_path)
        settings = service_settings(
            tmp_path,
            url,
            blob_dir=tmp_path / "blobs",
            reuse_address=f"127.0.0.1:{port}",
            tokens_file=tokens_file,
        )
        handle = await start(registry_app(settings, check_worker=FAST), settings)
        try:
            async with aio_channel(handle.address) as channel:
                await wait_serving(channel, REGISTRY)
                stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
                await stub.CreateLearnware(upload_requests(ZIP), metadata=auth, timeout=30)
                for _ in range(300):
                    if any(line["msg"] == "check finished" for line in lines.lines):
                        break
                    await asyncio.sleep(0.05)
        finally:
            await handle.stop(settings)
            await checker.stop(None)
            logger.removeHandler(lines)
            logger.setLevel(old_level)
    (finished,) = [line for line in lines.lines if line["msg"] == "check finished"]
    assert seen and re.fullmatch(r"[0-9a-f]{32}", seen[0])
    assert finished["request_id"] == seen[0]


# -- the registry's check-queue gauge ----------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def gauge(text: str, state: str) -> float | None:
    found = re.search(rf'^lwdock_registry_check_queue_depth{{state="{state}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


async def test_check_queue_depth_gauge(database_url: str, tmp_path: Path) -> None:
    """In a registry process of its own (the gauge is process-wide, and other tests' registries
    in this process refresh it from their databases)."""
    with scratch_database(database_url, "lwdock_obs_queue") as url:
        tokens_file, auth = developer_token(tmp_path)
        env = {
            **os.environ,
            "LWDOCK_TOKENS_FILE": str(tokens_file),
            "LWDOCK_DATABASE_URL": url,
            "LWDOCK_HOME": str(tmp_path),
            "LWDOCK_BLOB_DIR": str(tmp_path / "blobs"),
            "LWDOCK_PORT": "0",
            "LWDOCK_METRICS_PORT": "0",
            # Nothing listens there: the check job goes back to QUEUED each time.
            "LWDOCK_REUSE_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "registry_service", env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            listening = await asyncio.wait_for(_listening(process), 60)
            address, metrics_port = listening["address"], int(listening["metrics_port"])
            async with aio_channel(str(address)) as channel:
                await wait_serving(channel, REGISTRY)
                stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
                before = gauge(await asyncio.to_thread(scrape, metrics_port), "QUEUED")
                await stub.CreateLearnware(upload_requests(ZIP), metadata=auth, timeout=30)
            assert before in (None, 0.0)
            values: tuple[float | None, float | None] = (None, None)
            for _ in range(100):  # refreshed every 5 s
                text = await asyncio.to_thread(scrape, metrics_port)
                values = (gauge(text, "QUEUED"), gauge(text, "RUNNING"))
                if values == (1.0, 0.0):
                    break
                await asyncio.sleep(0.1)
            assert values == (1.0, 0.0)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)


async def _listening(process: asyncio.subprocess.Process) -> dict[str, object]:
    assert process.stderr is not None
    async for raw in process.stderr:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("msg") == "listening":
            # Keep reading stderr so the child never blocks on a full pipe.
            asyncio.get_running_loop().create_task(_drain(process.stderr))
            return dict(line)
    raise AssertionError(f"registry exited with {await process.wait()} before listening")


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
