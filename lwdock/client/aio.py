"""`AsyncLearnwareClient`: the whole user workflow against the four services, in asyncio.

Every call has a deadline (`timeout_s`, uploads and downloads `transfer_timeout_s`); reads
are retried on UNAVAILABLE by the channel's service config (`lwdock.channels`), and uploads,
which carry a `request_id`, are retried here (the registry answers a repeated request id with
the learnware it already made). Every server error becomes the typed `lwdock.errors`
exception, with the server's field violations, and `rpc` (see `lwdock.client.errors`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tqdm.auto import tqdm

from lwdock.channels import aio_channel
from lwdock.client.config import Endpoints, resolve_token
from lwdock.client.errors import CheckTimeout, IntegrityError, from_rpc_error
from lwdock.client.specs import as_table, load_json, load_spec
from lwdock.client.types import (
    CheckReport,
    Learnware,
    Prediction,
    Reuser,
    SearchResult,
    Strategy,
    Submission,
    learnware_id,
    learnware_name,
)
from lwdock.common.v1 import specification_pb2, tensor_pb2
from lwdock.converters import rkme_to_proto
from lwdock.errors import InvalidArgument, LwdockError, NotFound
from lwdock.registry.v1 import registry_service_pb2 as registry_pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.reuse.v1 import resources_pb2 as reuse_resources
from lwdock.reuse.v1 import reuse_service_pb2 as reuse_pb
from lwdock.reuse.v1 import reuse_service_pb2_grpc
from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import resources_pb2 as search_resources
from lwdock.search.v1 import search_service_pb2 as search_pb
from lwdock.search.v1 import search_service_pb2_grpc
from lwdock.semantic.checker import Semantic
from lwdock.streams import MAX_CHUNK_BYTES, tensor_chunks, tensor_header
from lwdock.tensors import from_numpy
from lwdock.uploads import create_learnware_requests

SHA256_TRAILER = "x-lwdock-sha256"
# Inputs above this many bytes go through StreamPredict instead of one Predict message.
UNARY_PREDICT_MAX_BYTES = 32 * 1024**2
UPLOAD_ATTEMPTS = 4
SETTLED_POLL_S = (0.2, 2.0)  # first and largest interval between GetLearnware polls

StatisticalSpec = RKMESpec | str | os.PathLike[str] | dict[str, Any]
SemanticInput = Semantic | dict[str, Any] | str | os.PathLike[str]


def semantic_json(value: SemanticInput) -> str:
    """The reference JSON text of a semantic spec (a Semantic, a dict, a JSON path)."""
    if isinstance(value, Semantic):
        return json.dumps(value.to_reference_dict())
    return json.dumps(load_json(value))


def semantic_query(
    value: search_resources.SemanticQuery | SemanticInput | None,
) -> search_resources.SemanticQuery:
    """A SemanticQuery from the reference's user semantic JSON (`Data`, `Task`, `Library`,
    `Scenario`, `License` Values lists; `Name` as the free text; `learnware_id`), a Semantic,
    or a SemanticQuery as is. Empty values mean no constraint."""
    if value is None:
        return search_resources.SemanticQuery()
    if isinstance(value, search_resources.SemanticQuery):
        return value
    if isinstance(value, Semantic):
        value = value.to_reference_dict()
        value.pop("License", None)  # to_reference_dict fills in defaults: not a constraint
        value.pop("Model", None)
    data = load_json(value)

    def values(key: str) -> list[str]:
        entry = data.get(key)
        raw = entry.get("Values") if isinstance(entry, dict) else None
        if raw is None or raw == "":
            return []
        return [raw] if isinstance(raw, str) else [str(v) for v in raw]

    def text(key: str) -> str:
        found = values(key)
        return found[0] if found else ""

    return search_resources.SemanticQuery(
        data_types=values("Data"),
        tasks=values("Task"),
        libraries=values("Library"),
        scenarios=values("Scenario"),
        licenses=values("License"),
        text=text("Name"),
        learnware_id=text("learnware_id"),
    )


def statistical_spec(value: StatisticalSpec) -> specification_pb2.StatisticalSpecification:
    return specification_pb2.StatisticalSpecification(rkme=rkme_to_proto(load_spec(value)))


def _package_bytes(package: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(package, bytes | bytearray | memoryview):
        return bytes(package)
    path = Path(package)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument.for_field(str(path), f"cannot read: {exc.strerror}") from None


def _input_array(data: Any) -> np.ndarray:
    if isinstance(data, list | tuple) and data and all(isinstance(x, str) for x in data):
        return np.asarray(data, dtype=object)
    array = np.asarray(data) if isinstance(data, np.ndarray) else as_table(data, "input")
    return array


class _StatusCall(grpc.RpcError):
    """A google.rpc.Status (e.g. a failed Operation's error) shaped like a failed call, so
    the same decoder turns it into the typed exception."""

    def __init__(self, status: status_pb2.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        for code in grpc.StatusCode:
            if code.value[0] == self._status.code:
                return code
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._status.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return (("grpc-status-details-bin", self._status.SerializeToString()),)


def error_from_status(status: status_pb2.Status, service: str = "") -> LwdockError:
    return from_rpc_error(_StatusCall(status), service)


class AsyncLearnwareClient:
    """The learnware market through its services.

    endpoints: the services' addresses (default: the suite's, see lwdock.client.config);
    token: bearer token (default: LWDOCK_TOKEN, else `$LWDOCK_HOME/admin.token`);
    timeout_s: deadline of each unary call; transfer_timeout_s: of an upload or download;
    progress: show tqdm bars on uploads, downloads and waits.
    """

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transfer_timeout_s: float = 600.0,
        progress: bool = False,
    ) -> None:
        self.endpoints = endpoints or Endpoints.from_settings()
        self.token = resolve_token(token)
        self.timeout_s = timeout_s
        self.transfer_timeout_s = transfer_timeout_s
        self.progress = progress
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> AsyncLearnwareClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _channel(self, service: str) -> grpc.aio.Channel:
        channel = self._channels.get(service)
        if channel is None:
            channel = aio_channel(getattr(self.endpoints, service), token=self.token)
            self._channels[service] = channel
        return channel

    @property
    def _registry(self) -> registry_service_pb2_grpc.RegistryServiceStub:
        return registry_service_pb2_grpc.RegistryServiceStub(self._channel("registry"))

    @property
    def _search(self) -> search_service_pb2_grpc.SearchServiceStub:
        return search_service_pb2_grpc.SearchServiceStub(self._channel("search"))

    @property
    def _reuse(self) -> reuse_service_pb2_grpc.ReuseServiceStub:
        return reuse_service_pb2_grpc.ReuseServiceStub(self._channel("reuse"))

    def _bar(self, total: int | None, desc: str, unit: str = "B") -> tqdm:
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit == "B",
            disable=not self.progress,
            leave=False,
        )

    # -- health ------------------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float = 60.0) -> dict[str, bool]:
        """Poll grpc.health.v1 on every service until all answer SERVING or time runs out;
        {service: serving}."""
        deadline = time.monotonic() + timeout_s
        ready = {name: False for name in self.endpoints.as_dict()}
        while True:
            for name in ready:
                if ready[name]:
                    continue
                stub = health_pb2_grpc.HealthStub(self._channel(name))
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    ready[name] = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    pass
            if all(ready.values()) or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(0.25)

    # -- registry ----------------------------------------------------------------------------

    async def upload(
        self,
        package: bytes | str | os.PathLike[str],
        semantic: SemanticInput,
        *,
        request_id: str | None = None,
    ) -> Learnware:
        """Stream a learnware zip to the registry (validated there before anything is
        stored); the new learnware, PENDING until its check runs."""
        data = _package_bytes(package)
        messages = create_learnware_requests(
            data, semantic_json=semantic_json(semantic), request_id=request_id or uuid.uuid4().hex
        )
        delay = 0.5
        for attempt in range(UPLOAD_ATTEMPTS):
            try:
                return Learnware.from_proto(await self._upload_once(messages, len(data)))
            except grpc.RpcError as error:
                retry = error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                if not retry or attempt == UPLOAD_ATTEMPTS - 1:
                    raise from_rpc_error(error, "registry") from None
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def _upload_once(
        self, messages: list[registry_pb.CreateLearnwareRequest], size: int
    ) -> Any:
        # call.write() rather than an async generator: grpcio's aio client turns a server
        # that ends the stream early into CancelledError for generators.
        call = self._registry.CreateLearnware(timeout=self.transfer_timeout_s)
        with self._bar(size, "upload") as bar:
            try:
                for message in messages:
                    await call.write(message)
                    if message.WhichOneof("message") == "chunk":
                        bar.update(len(message.chunk))
                await call.done_writing()
            except grpc.RpcError:
                pass  # the server ended the call: its status comes from `await call`
            return await call

    async def get_learnware(self, learnware: str) -> Learnware:
        try:
            reply = await self._registry.GetLearnware(
                registry_pb.GetLearnwareRequest(name=learnware_name(learnware)),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, "registry") from None
        return Learnware.from_proto(reply)

    async def list_learnwares(
        self, filter: str = "", *, page_size: int = 100, limit: int | None = None
    ) -> list[Learnware]:
        """Every learnware matching `filter` (e.g. `state = ACTIVE AND name = "digits"`),
        all pages, at most `limit`."""
        found: list[Learnware] = []
        token = ""
        while True:
            try:
                reply = await self._registry.ListLearnwares(
                    registry_pb.ListLearnwaresRequest(
                        page_size=page_size, page_token=token, filter=filter
                    ),
                    timeout=self.timeout_s,
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error, "registry") from None
            found += [Learnware.from_proto(m) for m in reply.learnwares]
            token = reply.next_page_token
            if not token or (limit is not None and len(found) >= limit):
                return found[:limit] if limit is not None else found

    async def delete_learnware(self, learnware: str) -> None:
        try:
            await self._registry.DeleteLearnware(
                registry_pb.DeleteLearnwareRequest(name=learnware_name(learnware)),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, "registry") from None

    async def check_report(self, learnware: str) -> CheckReport | None:
        """The check's record, or None while no check has finished."""
        try:
            reply = await self._registry.GetCheckReport(
                registry_pb.GetCheckReportRequest(name=f"{learnware_name(learnware)}/checkReport"),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as error:
            typed = from_rpc_error(error, "registry")
            if isinstance(typed, NotFound):
                return None
            raise typed from None
        return CheckReport.from_proto(reply)

    async def wait_checked(self, learnware: str, *, timeout_s: float = 300.0) -> Learnware:
        """Poll the learnware until its check has decided (ACTIVE or REJECTED, or it was
        deleted). Raises CheckTimeout when `timeout_s` passes first."""
        start = time.monotonic()
        interval = SETTLED_POLL_S[0]
        with self._bar(None, "waiting for the check", unit="poll") as bar:
            while True:
                current = await self.get_learnware(learnware)
                bar.set_postfix_str(current.state.value)
                bar.update(1)
                if current.state.settled:
                    return current
                waited = time.monotonic() - start
                if waited >= timeout_s:
                    raise CheckTimeout(current.id, current.state.value, waited)
                await asyncio.sleep(min(interval, max(0.0, timeout_s - waited)))
                interval = min(interval * 1.5, SETTLED_POLL_S[1])

    async def submit(
        self,
        package: bytes | str | os.PathLike[str],
        semantic: SemanticInput,
        *,
        wait: bool = True,
        timeout_s: float = 300.0,
        request_id: str | None = None,
    ) -> Submission:
        """Upload, then (wait=True) wait for the check: ACTIVE or REJECTED, with the report."""
        created = await self.upload(package, semantic, request_id=request_id)
        if not wait:
            return Submission(created)
        settled = await self.wait_checked(created.id, timeout_s=timeout_s)
        report = await self.check_report(created.id)
        return Submission(settled, report)

    async def download(self, learnware: str, path: str | os.PathLike[str] | None = None) -> bytes:
        """The learnware's zip (its sha256 checked against the registry's); written to
        `path` when given."""
        info = await self.get_learnware(learnware)
        call = self._registry.DownloadLearnware(
            registry_pb.DownloadLearnwareRequest(name=learnware_name(learnware)),
            timeout=self.transfer_timeout_s,
        )
        buffer = bytearray()
        try:
            with self._bar(info.size_bytes, "download") as bar:
                async for reply in call:
                    if reply.offset != len(buffer):
                        raise IntegrityError(
                            f"chunk at offset {reply.offset}, expected {len(buffer)}"
                        )
                    buffer += reply.chunk
                    bar.update(len(reply.chunk))
            metadata = [
                *(await call.initial_metadata() or ()),
                *(await call.trailing_metadata() or ()),
            ]
        except grpc.RpcError as error:
            raise from_rpc_error(error, "registry") from None
        announced = next((v for k, v in metadata if k == SHA256_TRAILER), info.sha256)
        digest = hashlib.sha256(buffer).hexdigest()
        if digest != announced:
            raise IntegrityError(
                f"downloaded {len(buffer)} bytes with sha256 {digest}, the registry announced "
                f"{announced}"
            )
        data = bytes(buffer)
        if path is not None:
            await asyncio.to_thread(Path(path).write_bytes, data)
        return data

    # -- search ------------------------------------------------------------------------------

    async def search(
        self,
        semantic: search_resources.SemanticQuery | SemanticInput | None = None,
        spec: StatisticalSpec | None = None,
        *,
        max_mixture: int = 5,
        page_size: int = 0,
        include_learnwares: bool = False,
        page_token: str = "",
    ) -> SearchResult:
        """ACTIVE learnwares for a task: by semantic query, by the RKME of the user's data
        (`spec`: an RKMESpec, a reference JSON path or dict), or both."""
        request = search_pb.SearchLearnwaresRequest(
            semantic_query=semantic_query(semantic),
            page_size=page_size,
            page_token=page_token,
            max_mixture=max_mixture,
            include_learnwares=include_learnwares,
        )
        if spec is not None:
            request.statistical_specification.CopyFrom(statistical_spec(spec))
        try:
            reply = await self._search.SearchLearnwares(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise from_rpc_error(error, "search") from None
        return SearchResult.from_proto(reply)

    async def index_stats(self) -> search_pb.GetIndexStatsResponse:
        try:
            return await self._search.GetIndexStats(
                search_pb.GetIndexStatsRequest(), timeout=self.timeout_s
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, "search") from None

    # -- reuse -------------------------------------------------------------------------------

    async def predict(
        self,
        learnwares: str | Sequence[str],
        X: Any,
        *,
        strategy: Strategy | str | None = None,
        weights: Sequence[float] | None = None,
        user_spec: StatisticalSpec | None = None,
        member_outputs: bool = False,
    ) -> Prediction:
        """Run one learnware, or several combined by `strategy` (default: single for one,
        average_mean for several; job_selector uses `user_spec` when given), on X.
        member_outputs: also return each learnware's own output (`members[i].output`)."""
        ids = [learnwares] if isinstance(learnwares, str) else list(learnwares)
        selection = reuse_resources.LearnwareSelection(
            learnwares=[learnware_id(i) for i in ids], weights=list(weights or [])
        )
        return await self._predict(
            {"learnwares": selection},
            X,
            strategy=strategy,
            user_spec=user_spec,
            member_outputs=member_outputs,
        )

    async def predict_with_reuser(self, reuser: str | Reuser, X: Any) -> Prediction:
        name = reuser.name if isinstance(reuser, Reuser) else reuser
        return await self._predict({"reuser": name}, X)

    async def _predict(
        self,
        target: dict[str, Any],
        X: Any,
        *,
        strategy: Strategy | str | None = None,
        user_spec: StatisticalSpec | None = None,
        member_outputs: bool = False,
    ) -> Prediction:
        array = _input_array(X)
        code = Strategy.parse(strategy).to_proto() if strategy is not None else 0
        spec = statistical_spec(user_spec) if user_spec is not None else None
        try:
            if array.dtype.kind == "O" or array.nbytes <= UNARY_PREDICT_MAX_BYTES:
                request = reuse_pb.PredictRequest(
                    strategy=code,
                    input=from_numpy(array),
                    return_member_outputs=member_outputs,
                    **target,  # type: ignore[arg-type]
                )
                if spec is not None:
                    request.user_specification.CopyFrom(spec)
                reply = await self._reuse.Predict(request, timeout=self.transfer_timeout_s)
                return Prediction.from_proto(reply)
            return await self._stream_predict(target, array, code, spec, member_outputs)
        except grpc.RpcError as error:
            raise from_rpc_error(error, "reuse") from None

    async def _stream_predict(
        self,
        target: dict[str, Any],
        array: np.ndarray,
        code: int,
        spec: specification_pb2.StatisticalSpecification | None,
        member_outputs: bool,
    ) -> Prediction:
        config = reuse_pb.StreamPredictConfig(
            strategy=code,
            return_member_outputs=member_outputs,
            **target,  # type: ignore[arg-type]
        )
        if spec is not None:
            config.user_specification.CopyFrom(spec)
        call = self._reuse.StreamPredict(timeout=self.transfer_timeout_s)
        try:
            await call.write(reuse_pb.StreamPredictRequest(config=config))
            await call.write(reuse_pb.StreamPredictRequest(header=tensor_header(array)))
            for chunk in tensor_chunks(array, MAX_CHUNK_BYTES):
                await call.write(reuse_pb.StreamPredictRequest(chunk=chunk))
            await call.done_writing()
        except grpc.RpcError:
            pass  # the server ended the call early: its status is raised below
        header: tensor_pb2.TensorHeader | None = None
        buffer = bytearray()
        summary = reuse_pb.StreamPredictSummary()
        async for reply in call:
            kind = reply.WhichOneof("message")
            if kind == "header":
                header = reply.header
            elif kind == "chunk":
                buffer += reply.chunk
            elif kind == "summary":
                summary = reply.summary
        if header is None:
            raise IntegrityError("StreamPredict ended without an output header")
        output = tensor_pb2.Tensor(shape=header.shape, dtype=header.dtype, data=bytes(buffer))
        return Prediction.from_proto(
            reuse_pb.PredictResponse(
                output=output, strategy=summary.strategy, members=summary.members
            )
        )

    async def create_reuser(
        self,
        learnwares: Sequence[str],
        X: Any,
        y: Any,
        *,
        strategy: Strategy | str = Strategy.FEATURE_AUGMENT,
        mode: str = "classification",
        weights: Sequence[float] | None = None,
        timeout_s: float = 600.0,
    ) -> Reuser:
        """Fit a reuser that needs labels (ensemble_pruning, feature_augment) on (X, y), as a
        long-running operation on reuse_service; waits for it."""
        x_array, y_array = as_table(X, "x"), np.asarray(y)
        config = reuse_pb.CreateReuserConfig(
            learnwares=reuse_resources.LearnwareSelection(
                learnwares=[learnware_id(i) for i in learnwares], weights=list(weights or [])
            ),
            strategy=Strategy.parse(strategy).to_proto(),
            mode=mode,
            request_id=uuid.uuid4().hex,
        )
        messages = [reuse_pb.CreateReuserRequest(config=config)]
        messages.append(reuse_pb.CreateReuserRequest(x_header=tensor_header(x_array)))
        messages += [reuse_pb.CreateReuserRequest(x_chunk=c) for c in tensor_chunks(x_array)]
        messages.append(reuse_pb.CreateReuserRequest(y_header=tensor_header(y_array)))
        messages += [reuse_pb.CreateReuserRequest(y_chunk=c) for c in tensor_chunks(y_array)]
        call = self._reuse.CreateReuser(timeout=self.transfer_timeout_s)
        try:
            try:
                for message in messages:
                    await call.write(message)
                await call.done_writing()
            except grpc.RpcError:
                pass
            operation = await call
        except grpc.RpcError as error:
            raise from_rpc_error(error, "reuse") from None
        done = await self._wait_operation("reuse", operation, timeout_s)
        reuser = reuse_resources.Reuser()
        done.response.Unpack(reuser)
        return Reuser.from_proto(reuser)

    async def delete_reuser(self, reuser: str | Reuser) -> None:
        name = reuser.name if isinstance(reuser, Reuser) else reuser
        try:
            await self._reuse.DeleteReuser(
                reuse_pb.DeleteReuserRequest(name=name), timeout=self.timeout_s
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, "reuse") from None

    async def _wait_operation(
        self, service: str, operation: operations_pb2.Operation, timeout_s: float
    ) -> operations_pb2.Operation:
        stub = operations_pb2_grpc.OperationsStub(self._channel(service))
        deadline = time.monotonic() + timeout_s
        interval = 0.2
        while not operation.done:
            if time.monotonic() >= deadline:
                raise CheckTimeout(operation.name, "RUNNING", timeout_s)
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 2.0)
            try:
                operation = await stub.GetOperation(
                    operations_pb2.GetOperationRequest(name=operation.name),
                    timeout=self.timeout_s,
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error, service) from None
        if operation.HasField("error"):
            raise error_from_status(operation.error, service)
        return operation
