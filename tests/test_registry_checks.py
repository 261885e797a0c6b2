"""The registry's check worker against real gRPC checkers: a test ReuseService whose
CheckLearnware answers as the test says, and the real reuse_service checking the reference
fixture in its sandbox. Each test: its own fresh PostgreSQL database, registry
server with a fast CheckWorker, and a port reserved for the checker.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2

from lwdock import errors
from lwdock.common.v1 import learnware_pb2
from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.reuse.v1 import reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.server.status import to_grpc_status, to_status_proto
from lwdock.settings import Settings
from lwdock.tokens import add_token, new_token
from registry_service.checks import CheckWorkerOptions
from registry_service.database import Database
from registry_service.repository import JobState, Repository
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import service_settings, wait_serving
from tests.test_registry_service import ZIP, upload_requests

PENDING = learnware_pb2.LEARNWARE_STATE_PENDING
CHECKING = learnware_pb2.LEARNWARE_STATE_CHECKING
ACTIVE = learnware_pb2.LEARNWARE_STATE_ACTIVE
REJECTED = learnware_pb2.LEARNWARE_STATE_REJECTED

FAST = CheckWorkerOptions(
    lease_s=30.0,
    call_timeout_s=5.0,
    idle_interval_s=0.05,
    backoff_initial_s=0.2,
    backoff_max_s=0.8,
    error_interval_s=0.1,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Handler = Callable[
    [reuse_service_pb2.CheckLearnwareRequest, grpc.aio.ServicerContext],
    Awaitable[reuse_service_pb2.CheckLearnwareResponse],
]


class ScriptedChecker(reuse_service_pb2_grpc.ReuseServiceServicer):
    """Stands in for reuse_service's CheckLearnware: answers with `handler`, records calls."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[reuse_service_pb2.CheckLearnwareRequest] = []
        self.metadata: list[dict[str, Any]] = []

    async def CheckLearnware(
        self,
        request: reuse_service_pb2.CheckLearnwareRequest,
        context: grpc.aio.ServicerContext,
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        return await self.handler(request, context)


def answer(passed: bool, reason: str = "", log: str = "") -> Handler:
    async def handler(
        request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        return reuse_service_pb2.CheckLearnwareResponse(passed=passed, reason=reason, log=log)

    return handler


async def serve_checker(port: int, checker: ScriptedChecker) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    reuse_service_pb2_grpc.add_ReuseServiceServicer_to_server(checker, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    return server


@dataclass
class Env:
    settings: Settings
    checker_port: int
    database_url: str
    token: str
    stub: registry_service_pb2_grpc.RegistryServiceStub | None = None
    handle: ServerHandle | None = None
    channel: grpc.aio.Channel | None = None
    servers: list[grpc.aio.Server] = field(default_factory=list)

    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def start_registry(self, options: CheckWorkerOptions = FAST) -> None:
        self.handle = await start(build_app(self.settings, check_worker=options), self.settings)
        self.channel = grpc.aio.insecure_channel(self.handle.address)
        await wait_serving(self.channel, SERVICE_NAME)
        self.stub = registry_service_pb2_grpc.RegistryServiceStub(self.channel)

    async def stop_registry(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.handle is not None:
            await self.handle.stop(self.settings)
            self.handle = None

    async def checker(self, handler: Handler) -> ScriptedChecker:
        checker = ScriptedChecker(handler)
        self.servers.append(await serve_checker(self.checker_port, checker))
        return checker

    async def upload(self) -> learnware_pb2.Learnware:
        assert self.stub is not None
        return await self.stub.CreateLearnware(upload_requests(ZIP), metadata=self.auth())

    async def get(self, name: str) -> learnware_pb2.Learnware:
        assert self.stub is not None
        return await self.stub.GetLearnware(pb.GetLearnwareRequest(name=name))

    async def wait_state(self, name: str, *states: int, within_s: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            lw = await self.get(name)
            if lw.state in states:
                return lw
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{name} stayed {learnware_pb2.LearnwareState.Name(lw.state)}")
            await asyncio.sleep(0.02)

    async def repo_call(self, fn: Callable[[Repository], Awaitable[Any]]) -> Any:
        db = Database(self.database_url)
        await db.open()
        try:
            return await fn(Repository(db.pool))
        finally:
            await db.close()


@pytest.fixture
def fresh_db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "lwdock_rc") as url:
        yield url


@pytest_asyncio.fixture
async def env(fresh_db: str, tmp_path: Path) -> AsyncIterator[Env]:
    tokens_file = tmp_path / "tokens.json"
    token = new_token()
    add_token(tokens_file, token, "users/alice", "developer")
    port = free_port()
    settings = service_settings(
        tmp_path,
        fresh_db,
        tokens_file=tokens_file,
        blob_dir=tmp_path / "blobs",
        reuse_address=f"127.0.0.1:{port}",
    )
    e = Env(settings, port, fresh_db, token)
    try:
        yield e
    finally:
        await e.stop_registry()
        for server in e.servers:
            await server.stop(None)


async def test_passing_check_makes_active_with_report(env: Env) -> None:
    gate = asyncio.Event()

    async def slow_pass(
        request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        await gate.wait()
        return reuse_service_pb2.CheckLearnwareResponse(passed=True, log="predict ok: (10,)")

    checker = await env.checker(slow_pass)
    await env.start_registry()
    lw = await env.upload()
    assert lw.state in (PENDING, CHECKING)
    await env.wait_state(lw.name, CHECKING)  # held while the checker works
    gate.set()
    active = await env.wait_state(lw.name, ACTIVE)
    assert active.state_reason == ""
    assert env.stub is not None
    report = await env.stub.GetCheckReport(pb.GetCheckReportRequest(name=f"{lw.name}/checkReport"))
    assert report.passed and report.log == "predict ok: (10,)"

    # The checker got the exact package and the semantic.
    (request,) = checker.requests
    assert request.learnware == lw.name
    assert request.package == ZIP
    assert hashlib.sha256(request.package).hexdigest() == request.package_sha256
    assert request.package_sha256 == lw.package.sha256
    assert request.semantic_specification == lw.semantic_specification
    assert request.semantic_specification.input.dimension == 64


async def test_failing_check_rejects_with_reason(env: Env) -> None:
    await env.checker(answer(False, "output shape (3,) != declared (10,)", "traceback..."))
    await env.start_registry()
    lw = await env.upload()
    rejected = await env.wait_state(lw.name, REJECTED)
    assert rejected.state_reason == "output shape (3,) != declared (10,)"
    assert env.stub is not None
    report = await env.stub.GetCheckReport(pb.GetCheckReportRequest(name=f"{lw.name}/checkReport"))
    assert not report.passed
    assert report.reason == "output shape (3,) != declared (10,)"
    assert report.log == "traceback..."


async def _assert_waiting(env: Env, name: str, *, min_releases: int = 2) -> None:
    """The learnware stays PENDING/CHECKING (never REJECTED) while its job is given back again
    and again with growing not_before and no attempt spent."""
    learnware_id = name.split("/", 1)[1]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    seen_errors: set[str] = set()
    gaps: list[float] = []
    while True:
        lw = await env.get(name)
        assert lw.state in (PENDING, CHECKING), learnware_pb2.LearnwareState.Name(lw.state)
        job = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
        assert job is not None
        if job.state == JobState.QUEUED and job.last_error:
            assert job.attempts == 0  # never consumed
            gap = (job.not_before - job.update_time).total_seconds()
            if not gaps or abs(gap - gaps[-1]) > 0.05:
                gaps.append(gap)
            seen_errors.add(job.last_error.split(":", 1)[0])
        if len(gaps) >= min_releases:
            break
        assert loop.time() < deadline, f"job not released repeatedly: {gaps}"
        await asyncio.sleep(0.02)
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # backoff grows
    assert len(seen_errors) == 1, seen_errors


async def test_unreachable_checker_keeps_pending_then_activates(env: Env) -> None:
    await env.start_registry()  # nothing listens at reuse_address
    lw = await env.upload()
    await _assert_waiting(env, lw.name)
    learnware_id = lw.learnware_id
    job = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
    assert job.last_error.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))

    checker = await env.checker(answer(True, log="ok"))
    active = await env.wait_state(lw.name, ACTIVE)
    assert active.state == ACTIVE and len(checker.requests) == 1
    done = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
    assert done.state == JobState.DONE and done.attempts == 1


async def test_checks_present_the_service_token(env: Env) -> None:
    """LWDOCK_SERVICE_TOKEN is the bearer token the registry's check worker presents to
    reuse_service (which may refuse anonymous callers)."""
    env.settings = env.settings.model_copy(update={"service_token": "service-secret"})
    checker = await env.checker(answer(True, log="ok"))
    await env.start_registry()
    lw = await env.upload()
    await env.wait_state(lw.name, ACTIVE)
    assert checker.metadata[0]["authorization"] == "Bearer service-secret"


async def test_checker_without_a_sandbox_keeps_pending_instead_of_rejecting(env: Env) -> None:
    """A reuse host that cannot sandbox model code refuses with FAILED_PRECONDITION and reason
    SANDBOX_UNAVAILABLE: the host's fault, so the job is given back, not failed; another
    FAILED_PRECONDITION (the learnware's fault) still rejects (test above)."""

    async def no_sandbox(
        request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        error = errors.FailedPrecondition(
            "this host cannot sandbox model code", reason="SANDBOX_UNAVAILABLE"
        )
        await context.abort_with_status(to_grpc_status(to_status_proto(error, "reuse")))
        raise AssertionError("unreachable")

    await env.checker(no_sandbox)
    await env.start_registry()
    lw = await env.upload()
    await _assert_waiting(env, lw.name)
    learnware_id = lw.learnware_id
    job = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
    assert job.last_error.startswith("FAILED_PRECONDITION") and job.attempts == 0


async def test_real_reuse_service_checks_the_package_and_activates(env: Env) -> None:
    """The real reuse_service as the checker: the reference fixture is loaded in its sandbox,
    predicts on herded and random rows, and the learnware becomes ACTIVE with its log."""
    from reuse_service.sandbox import probe_bubblewrap
    from reuse_service.server import build_app as reuse_app

    if not (await probe_bubblewrap()).available:
        pytest.skip("no sandbox on this host: reuse_service cannot run model code")
    reuse_settings = env.settings.model_copy(update={"port": env.checker_port})
    reuse = await start(reuse_app(reuse_settings), reuse_settings)
    try:
        # A cold sandbox imports scikit-learn first: give the call time on a busy machine.
        await env.start_registry(replace(FAST, call_timeout_s=60.0))
        lw = await env.upload()
        active = await env.wait_state(lw.name, ACTIVE, REJECTED, within_s=90.0)
        assert active.state == ACTIVE, active.state_reason
        assert env.stub is not None
        report = await env.stub.GetCheckReport(
            pb.GetCheckReportRequest(name=f"{lw.name}/checkReport")
        )
        assert report.passed
        assert "rows herded from the spec" in report.log and "random rows" in report.log
        learnware_id = lw.learnware_id
        job = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
        assert job.state == JobState.DONE and job.attempts == 1
    finally:
        await env.stop_registry()
        await reuse.stop(reuse_settings)


async def test_worker_cancelled_mid_check_is_reclaimed_after_lease(env: Env) -> None:
    hang = asyncio.Event()
    calls = 0

    async def hang_first(
        request: reuse_service_pb2.CheckLearnwareRequest, context: grpc.aio.ServicerContext
    ) -> reuse_service_pb2.CheckLearnwareResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            await hang.wait()  # the first worker dies while this hangs
        return reuse_service_pb2.CheckLearnwareResponse(passed=True, log=f"call {calls}")

    checker = await env.checker(hang_first)
    short = CheckWorkerOptions(
        lease_s=1.0, call_timeout_s=30.0, idle_interval_s=0.05, backoff_initial_s=0.2
    )
    await env.start_registry(short)
    lw = await env.upload()
    await env.wait_state(lw.name, CHECKING)
    for _ in range(200):
        if checker.requests:
            break
        await asyncio.sleep(0.02)
    assert len(checker.requests) == 1
    await env.stop_registry()  # cancels the worker mid-check: the job stays RUNNING

    learnware_id = lw.learnware_id
    job = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
    assert job.state == JobState.RUNNING and job.attempts == 1

    await env.start_registry(short)  # a new worker: claims it once the lease expired
    active = await env.wait_state(lw.name, ACTIVE)
    assert active.state == ACTIVE
    done = await env.repo_call(lambda repo: repo.latest_check_job(learnware_id))
    assert done.state == JobState.DONE and done.attempts == 2 and done.log == "call 2"
    assert len(checker.requests) == 2
    hang.set()


async def test_semantic_changes_recheck_only_when_they_matter(env: Env) -> None:
    checker = await env.checker(answer(True, log="ok"))
    await env.start_registry()
    lw = await env.wait_state((await env.upload()).name, ACTIVE)
    assert env.stub is not None
    assert len(checker.requests) == 1

    # Name / description: the learnware stays ACTIVE, no new check.
    change = learnware_pb2.Learnware(name=lw.name, etag=lw.etag)
    change.semantic_specification.description = "Digits 0-4 from 8x8 images, now documented."
    renamed = await env.stub.UpdateLearnware(
        pb.UpdateLearnwareRequest(
            learnware=change,
            update_mask=field_mask_pb2.FieldMask(paths=["semantic_specification.description"]),
        ),
        metadata=env.auth(),
    )
    assert renamed.state == ACTIVE
    await asyncio.sleep(0.5)
    assert len(checker.requests) == 1

    # Task: back to PENDING, checked again, ACTIVE again.
    change = learnware_pb2.Learnware(name=lw.name, etag=renamed.etag)
    change.semantic_specification.task = "Regression"
    retasked = await env.stub.UpdateLearnware(
        pb.UpdateLearnwareRequest(
            learnware=change,
            update_mask=field_mask_pb2.FieldMask(paths=["semantic_specification.task"]),
        ),
        metadata=env.auth(),
    )
    assert retasked.state in (PENDING, CHECKING)
    await env.wait_state(lw.name, ACTIVE)
    assert len(checker.requests) == 2
    assert checker.requests[1].semantic_specification.task == "Regression"
