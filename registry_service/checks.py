"""The registry's check worker: runs queued check jobs against reuse_service.

Loop: requeue expired leases, claim a job (learnware PENDING -> CHECKING), send the package
bytes and semantic to `ReuseService/CheckLearnware` with a deadline, then:

- a response: `finish_check_job` -> ACTIVE (passed) or REJECTED (with the checker's reason);
- the checker unreachable / too slow / not implementing the check (UNAVAILABLE,
  DEADLINE_EXCEEDED, UNIMPLEMENTED, RESOURCE_EXHAUSTED): `release_check_job` -> QUEUED again
  after an exponential backoff, learnware back to PENDING, no attempt consumed, never rejected;
- any other failure (blob missing, checker INTERNAL error): `fail_check_job`, which counts
  attempts and rejects once they are spent.

A worker that dies mid-check leaves the job RUNNING; its lease expires and the job is claimed
again. A check is never passed without a checker's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass

import grpc

from lwdock.channels import aio_channel
from lwdock.errors import Aborted
from lwdock.reuse.v1 import reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.server.context import request_scope
from lwdock.server.status import from_rpc_error
from registry_service.blobstore import BlobStore
from registry_service.converters import semantic_to_proto
from registry_service.repository import CheckJobRow, Repository

log = logging.getLogger("lwdock.registry.checks")

# The checker is absent or cannot take the call now: retry later without spending an attempt.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _sandbox_unavailable(error: grpc.aio.AioRpcError) -> bool:
    """reuse_service refused because its host cannot sandbox model code (FAILED_PRECONDITION
    with reason SANDBOX_UNAVAILABLE): not the learnware's fault."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return False
    return from_rpc_error(error).reason == "SANDBOX_UNAVAILABLE"


@dataclass(frozen=True)
class CheckWorkerOptions:
    # How long a claimed job is ours; a worker that dies loses it after this.
    lease_s: float = 120.0
    # Deadline of one CheckLearnware call (keep it below lease_s).
    call_timeout_s: float = 60.0
    # Poll interval while no job is runnable.
    idle_interval_s: float = 1.0
    # Backoff per consecutive failure to reach the checker (job not_before), capped.
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # Pause after an unexpected error of the loop itself (e.g. database down).
    error_interval_s: float = 1.0


class _Transient(Exception):
    pass


class CheckWorker:
    """One asyncio task that runs check jobs, one at a time."""

    def __init__(
        self,
        repo: Repository,
        blobs: BlobStore,
        reuse_address: str,
        options: CheckWorkerOptions | None = None,
        *,
        token: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.repo = repo
        self.blobs = blobs
        self.reuse_address = reuse_address
        self.options = options or CheckWorkerOptions()
        self.token = token
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.failures = 0  # consecutive failures to reach the checker
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"check-worker {self.worker_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._reset_channel()

    async def _reset_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    def _stub(self) -> reuse_service_pb2_grpc.ReuseServiceStub:
        if self._channel is None:
            self._channel = aio_channel(self.reuse_address, token=self.token)
        return reuse_service_pb2_grpc.ReuseServiceStub(self._channel)

    def backoff_s(self) -> float:
        opts = self.options
        if self.failures <= 0:
            return 0.0
        return min(opts.backoff_initial_s * 2 ** (self.failures - 1), opts.backoff_max_s)

    async def run(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("check worker loop failed", extra={"worker": self.worker_id})
                await asyncio.sleep(self.options.error_interval_s)
                continue
            if not worked:
                await asyncio.sleep(self.options.idle_interval_s)

    async def run_once(self) -> bool:
        """Run at most one job; False when none was runnable."""
        await self.repo.requeue_expired_check_jobs()
        job = await self.repo.claim_check_job(self.worker_id, self.options.lease_s)
        if job is None:
            return False
        # One request id per check, in this service's log lines and forwarded to reuse
        # (x-request-id), so a check can be followed across both.
        with request_scope():
            await self._run_job(job)
        return True

    async def _run_job(self, job: CheckJobRow) -> None:
        extra = {"job": job.id, "learnware": job.learnware_id, "worker": self.worker_id}
        try:
            try:
                response = await self._check(job)
            except _Transient as exc:
                self.failures += 1
                delay = self.backoff_s()
                log.warning(
                    "checker unavailable, check requeued",
                    extra={**extra, "error": str(exc), "retry_in_s": delay},
                )
                await self.repo.release_check_job(
                    job.id, self.worker_id, retry_delay_s=delay, error=str(exc)
                )
                return
            except Exception as exc:
                self.failures += 1
                log.exception("check could not run", extra=extra)
                await self.repo.fail_check_job(
                    job.id,
                    self.worker_id,
                    f"{type(exc).__name__}: {exc}",
                    retry_delay_s=self.backoff_s(),
                )
                return
            self.failures = 0
            await self.repo.finish_check_job(
                job.id,
                self.worker_id,
                passed=response.passed,
                reason=response.reason,
                log=response.log,
            )
            log.info("check finished", extra={**extra, "passed": response.passed})
        except Aborted:
            log.warning("lease lost before the check was recorded", extra=extra)

    async def _check(self, job: CheckJobRow) -> reuse_service_pb2.CheckLearnwareResponse:
        learnware = await self.repo.get_learnware(job.learnware_id)
        package = await self.blobs.get(job.package_sha256)
        request = reuse_service_pb2.CheckLearnwareRequest(
            learnware=learnware.name,
            package_sha256=job.package_sha256,
            package=package,
            semantic_specification=semantic_to_proto(learnware.semantic),
        )
        try:
            return await self._stub().CheckLearnware(request, timeout=self.options.call_timeout_s)
        except grpc.aio.AioRpcError as exc:
            message = f"{exc.code().name}: {exc.details()}"
            if exc.code() in TRANSIENT_CODES or _sandbox_unavailable(exc):
                # (no sandbox on the checker's host: wait for one rather than reject the
                # learnware for the host's fault)
                # A fresh channel next time: gRPC's own reconnect backoff (up to minutes)
                # would otherwise keep failing fast after the checker came back.
                await self._reset_channel()
                raise _Transient(message) from exc
            raise RuntimeError(f"CheckLearnware failed: {message}") from exc
