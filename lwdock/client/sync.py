"""`LearnwareClient`: the blocking API for scripts and notebooks.

A thin wrapper: it owns an event loop in a background thread and runs the
`AsyncLearnwareClient` coroutines there, so it also works where a loop is already running
(Jupyter). Same arguments, same results, same typed exceptions.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from lwdock.client.aio import AsyncLearnwareClient, SemanticInput, StatisticalSpec
from lwdock.client.config import Endpoints
from lwdock.client.types import (
    CheckReport,
    Learnware,
    Prediction,
    Reuser,
    SearchResult,
    Strategy,
    Submission,
)
from lwdock.search.v1 import resources_pb2 as search_resources
from lwdock.search.v1 import search_service_pb2 as search_pb

T = TypeVar("T")


class LearnwareClient:
    """Blocking client; see AsyncLearnwareClient for the arguments. Use as a context manager
    or call close()."""

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transfer_timeout_s: float = 600.0,
        progress: bool = True,
    ) -> None:
        self._aio = AsyncLearnwareClient(
            endpoints,
            token,
            timeout_s=timeout_s,
            transfer_timeout_s=transfer_timeout_s,
            progress=progress,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lwdock-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def endpoints(self) -> Endpoints:
        return self._aio.endpoints

    @property
    def token(self) -> str | None:
        return self._aio.token

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the call too
            raise

    def close(self) -> None:
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aio.close(), self._loop).result(timeout=10)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> LearnwareClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    # -- the API (see AsyncLearnwareClient for each method) ------------------------------------

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, bool]:
        return self._run(self._aio.wait_ready(timeout_s))

    def upload(
        self,
        package: bytes | str | os.PathLike[str],
        semantic: SemanticInput,
        *,
        request_id: str | None = None,
    ) -> Learnware:
        return self._run(self._aio.upload(package, semantic, request_id=request_id))

    def submit(
        self,
        package: bytes | str | os.PathLike[str],
        semantic: SemanticInput,
        *,
        wait: bool = True,
        timeout_s: float = 300.0,
        request_id: str | None = None,
    ) -> Submission:
        return self._run(
            self._aio.submit(
                package, semantic, wait=wait, timeout_s=timeout_s, request_id=request_id
            )
        )

    def get_learnware(self, learnware: str) -> Learnware:
        return self._run(self._aio.get_learnware(learnware))

    def list_learnwares(
        self, filter: str = "", *, page_size: int = 100, limit: int | None = None
    ) -> list[Learnware]:
        return self._run(self._aio.list_learnwares(filter, page_size=page_size, limit=limit))

    def delete_learnware(self, learnware: str) -> None:
        self._run(self._aio.delete_learnware(learnware))

    def check_report(self, learnware: str) -> CheckReport | None:
        return self._run(self._aio.check_report(learnware))

    def wait_checked(self, learnware: str, *, timeout_s: float = 300.0) -> Learnware:
        return self._run(self._aio.wait_checked(learnware, timeout_s=timeout_s))

    def download(self, learnware: str, path: str | os.PathLike[str] | None = None) -> bytes:
        return self._run(self._aio.download(learnware, path))

    def search(
        self,
        semantic: search_resources.SemanticQuery | SemanticInput | None = None,
        spec: StatisticalSpec | None = None,
        *,
        max_mixture: int = 5,
        page_size: int = 0,
        include_learnwares: bool = False,
        page_token: str = "",
    ) -> SearchResult:
        return self._run(
            self._aio.search(
                semantic,
                spec,
                max_mixture=max_mixture,
                page_size=page_size,
                include_learnwares=include_learnwares,
                page_token=page_token,
            )
        )

    def index_stats(self) -> search_pb.GetIndexStatsResponse:
        return self._run(self._aio.index_stats())

    def predict(
        self,
        learnwares: str | Sequence[str],
        X: Any,
        *,
        strategy: Strategy | str | None = None,
        weights: Sequence[float] | None = None,
        user_spec: StatisticalSpec | None = None,
        member_outputs: bool = False,
    ) -> Prediction:
        return self._run(
            self._aio.predict(
                learnwares,
                X,
                strategy=strategy,
                weights=weights,
                user_spec=user_spec,
                member_outputs=member_outputs,
            )
        )

    def predict_with_reuser(self, reuser: str | Reuser, X: Any) -> Prediction:
        return self._run(self._aio.predict_with_reuser(reuser, X))

    def create_reuser(
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
        return self._run(
            self._aio.create_reuser(
                learnwares,
                X,
                y,
                strategy=strategy,
                mode=mode,
                weights=weights,
                timeout_s=timeout_s,
            )
        )

    def delete_reuser(self, reuser: str | Reuser) -> None:
        self._run(self._aio.delete_reuser(reuser))
