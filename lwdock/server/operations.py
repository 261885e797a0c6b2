"""Long-running operations (AIP-151) kept by the server that runs them.

`OperationStore` holds operations in memory: a service starts work with `start(coro_factory)`
and gets a `google.longrunning.Operation` to return at once; the work updates its metadata
and ends with a response or an error. `OperationsServicer` serves the standard
`google.longrunning.Operations` API (Get, List, Cancel, Delete, Wait) over the store.
Cancelling cancels the work's asyncio task, whose cleanup stops any worker process.

Operations live as long as the server process (the most recent `max_kept` are kept); a
client that sees NOT_FOUND after a restart starts the work again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from lwdock import errors
from lwdock.server.status import internal_status_proto, to_status_proto

log = logging.getLogger("lwdock.operations")

MetadataSetter = Callable[[Message], None]
Work = Callable[[MetadataSetter], Awaitable[Message]]


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@dataclass
class _Entry:
    operation: operations_pb2.Operation
    task: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class OperationStore:
    def __init__(self, domain: str, *, max_kept: int = 1000) -> None:
        self.domain = domain
        self.max_kept = max_kept
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def start(self, work: Work, initial_metadata: Message) -> operations_pb2.Operation:
        name = f"operations/{uuid.uuid4().hex}"
        entry = _Entry(operations_pb2.Operation(name=name, metadata=_pack(initial_metadata)))
        self._entries[name] = entry
        self._forget_old()

        def set_metadata(metadata: Message) -> None:
            entry.operation.metadata.CopyFrom(_pack(metadata))

        async def run() -> None:
            try:
                response = await work(set_metadata)
                entry.operation.response.CopyFrom(_pack(response))
            except asyncio.CancelledError:
                entry.operation.error.CopyFrom(
                    status_pb2.Status(code=code_pb2.CANCELLED, message="operation cancelled")
                )
            except errors.LwdockError as error:
                entry.operation.error.CopyFrom(to_status_proto(error, self.domain))
            except Exception:
                log.exception("operation failed", extra={"operation": name})
                entry.operation.error.CopyFrom(internal_status_proto(self.domain))
            finally:
                entry.operation.done = True
                entry.finished.set()

        entry.task = asyncio.create_task(run(), name=name)
        return self.get(name)

    def _forget_old(self) -> None:
        while len(self._entries) > self.max_kept:
            name, entry = next(iter(self._entries.items()))
            if not entry.operation.done:
                break
            del self._entries[name]

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise errors.NotFound("Operation", name)
        return entry

    def get(self, name: str) -> operations_pb2.Operation:
        result = operations_pb2.Operation()
        result.CopyFrom(self._entry(name).operation)
        return result

    def list(self, page_size: int, page_token: str) -> tuple[list[operations_pb2.Operation], str]:
        if page_size < 0:
            raise errors.InvalidArgument.for_field("page_size", "must be >= 0")
        size = min(page_size or 50, 1000)
        try:
            start = int(base64.urlsafe_b64decode(page_token.encode()).decode()) if page_token else 0
        except ValueError:
            raise errors.InvalidArgument.for_field(
                "page_token", "not a token from this server"
            ) from None
        names = list(self._entries)[start : start + size]
        following = start + size
        token = (
            base64.urlsafe_b64encode(str(following).encode()).decode()
            if following < len(self._entries)
            else ""
        )
        return [self.get(name) for name in names], token

    async def cancel(self, name: str) -> None:
        entry = self._entry(name)
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry.finished.wait()

    async def delete(self, name: str) -> None:
        await self.cancel(name)
        self._entries.pop(name, None)

    async def wait(self, name: str, timeout_s: float | None) -> operations_pb2.Operation:
        entry = self._entry(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(entry.finished.wait(), timeout_s)
        return self.get(name)

    async def close(self) -> None:
        for name in list(self._entries):
            await self.cancel(name)


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """google.longrunning.Operations over an OperationStore."""

    def __init__(self, store: OperationStore) -> None:
        self.store = store

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        return self.store.get(request.name)

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        operations, token = self.store.list(request.page_size, request.page_token)
        return operations_pb2.ListOperationsResponse(operations=operations, next_page_token=token)

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.store.cancel(request.name)
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.store.delete(request.name)
        return empty_pb2.Empty()

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        # Wait at most the requested timeout and never past the caller's deadline (a little
        # before it, so the current state still reaches the caller).
        limits = (
            [request.timeout.ToTimedelta().total_seconds()] if request.HasField("timeout") else []
        )
        remaining = context.time_remaining()
        if remaining is not None:
            limits.append(max(0.0, remaining - 0.05))
        return await self.store.wait(request.name, min(limits) if limits else None)


OPERATIONS_SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
