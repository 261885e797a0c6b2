"""The index follows the registry's change feed (RegistryService.WatchChanges).

Each connection first asks the registry's health (SERVING only once its database answers),
then watches from the index's last sequence: the registry replays every later event, marks
the end of the replay with a `caught_up` response, then follows new ones as they commit. The
index counts as caught up once it has applied the events before that marker; from then on
every event is applied as it arrives. A broken stream or an unreachable
registry marks the index not synced (it keeps serving what it has) and the follower
reconnects with exponential backoff, resuming from the last sequence it applied, so it
neither misses nor repeats an event. Snapshots are written when the index first catches up,
then every `snapshot_interval_s` while it changes, and at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.channels import aio_channel
from lwdock.errors import Unavailable
from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from search_service import metrics
from search_service.converters import change_to_domain
from search_service.index import SearchIndex
from search_service.snapshot import capture_snapshot, write_snapshot

log = logging.getLogger("lwdock.search")

REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
_END = object()
_CAUGHT_UP = object()


@dataclass
class FollowerOptions:
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    snapshot_interval_s: float = 30.0
    health_timeout_s: float = 3.0
    batch_max: int = 256


class RegistryFollower:
    def __init__(
        self,
        index: SearchIndex,
        address: str,
        *,
        snapshot_dir: Path | None = None,
        on_caught_up: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        options: FollowerOptions | None = None,
        token: str | None = None,
    ) -> None:
        self.index = index
        self.address = address
        self.snapshot_dir = snapshot_dir
        self.on_caught_up = on_caught_up
        self.on_lost = on_lost
        self.options = options or FollowerOptions()
        self.token = token
        self.last_error = ""
        self._saved_changes = index.changes
        self._last_save = time.monotonic()
        # One snapshot write at a time: a periodic write still running in its thread when
        # stop() forces one would otherwise remove the other's directory.
        self._save_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._progressed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.save_snapshot, force=False)

    async def run(self) -> None:
        delay = self.options.backoff_initial_s
        while True:
            self._progressed = False
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable registry, broken stream: retry
                self.last_error = _describe(exc)
                log.warning(
                    "registry change feed unavailable, retrying",
                    extra={"error": self.last_error, "retry_in_s": delay},
                )
            self._set_synced(False)
            if self.on_lost is not None:
                await self.on_lost()
            if self._progressed:
                delay = self.options.backoff_initial_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.backoff_max_s)

    async def _follow_once(self) -> None:
        """One connection, until the stream breaks (raises). `_progressed` records whether
        it applied anything or caught up (the next retry then starts from the shortest
        backoff)."""
        async with aio_channel(self.address, token=self.token) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=REGISTRY_SERVICE),
                timeout=self.options.health_timeout_s,
            )
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                raise Unavailable("the registry is not SERVING")
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            call = stub.WatchChanges(
                registry_service_pb2.WatchChangesRequest(since_sequence=self.index.last_sequence)
            )
            queue: asyncio.Queue[object] = asyncio.Queue()
            pump = asyncio.create_task(_pump(call, queue))
            try:
                while True:
                    batch = [await queue.get()]
                    while (
                        not queue.empty()
                        and len(batch) < self.options.batch_max
                        and batch[-1] is not _CAUGHT_UP
                    ):
                        batch.append(queue.get_nowait())
                    ended = await self._apply(batch)
                    self._progressed = True
                    if ended is not None:
                        if isinstance(ended, BaseException):
                            raise ended
                        raise Unavailable("the registry ended the change feed")
                    if batch[-1] is _CAUGHT_UP:
                        await self._caught_up()
                    await self._maybe_snapshot()
            finally:
                call.cancel()
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await pump

    async def _apply(self, batch: list[object]) -> object | None:
        """Apply events in order (in a thread: the write lock waits for running searches,
        which must not stall the event loop); returns the end marker (or error) if the batch
        holds one."""
        changes = []
        ended: object | None = None
        for item in batch:
            if item is _END or isinstance(item, BaseException):
                ended = item
                break
            if item is _CAUGHT_UP:
                continue
            changes.append(change_to_domain(item))  # type: ignore[arg-type]
        if changes:  # the end-of-replay marker alone changes nothing
            await asyncio.to_thread(self.index.apply_many, changes)
            metrics.publish(self.index)
        return ended

    async def _caught_up(self) -> None:
        first = self.index.synced_at is None
        self._set_synced(True)
        self.last_error = ""
        log.info(
            "index caught up with the registry",
            extra={
                "last_sequence": self.index.last_sequence,
                "learnwares": self.index.learnware_count,
            },
        )
        # Tell the server first (health SERVING), with nothing awaited since `synced` was
        # set; the snapshot is written after, so readiness does not wait for the disk.
        if self.on_caught_up is not None:
            await self.on_caught_up()
        await asyncio.to_thread(self.save_snapshot, force=first)

    def _set_synced(self, synced: bool) -> None:
        if synced:
            self.index.synced_at = time.monotonic()
        elif self.index.synced:
            self.index.synced_at = time.monotonic()
        self.index.synced = synced
        metrics.publish(self.index)

    async def _maybe_snapshot(self) -> None:
        if time.monotonic() - self._last_save >= self.options.snapshot_interval_s:
            await asyncio.to_thread(self.save_snapshot, force=False)

    def save_snapshot(self, *, force: bool) -> None:
        if self.snapshot_dir is None:
            return
        with self._save_lock:
            if not force and self.index.changes == self._saved_changes:
                return
            # The index as it is now (under the read lock: the copy only), then written to
            # disk while the feed's changes and the searches go on.
            with self.index.lock.reading():
                capture = capture_snapshot(self.index)
            try:
                write_snapshot(capture, self.snapshot_dir)
            except OSError as exc:
                log.warning("snapshot not written", extra={"error": str(exc)})
                return
            self._saved_changes = capture.changes
            self._last_save = time.monotonic()
            log.info(
                "snapshot written",
                extra={
                    "last_sequence": capture.last_sequence,
                    "learnwares": len(capture.records),
                },
            )


async def _pump(call: grpc.aio.UnaryStreamCall, queue: asyncio.Queue[object]) -> None:
    try:
        async for reply in call:
            queue.put_nowait(reply.event if reply.HasField("event") else _CAUGHT_UP)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        queue.put_nowait(exc)
        return
    queue.put_nowait(_END)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
