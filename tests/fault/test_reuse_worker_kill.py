"""Fault: a sandboxed reuse worker is killed with SIGKILL in the middle of a Predict.

A small market (real registry with its check worker, real reuse_service, real bubblewrap
workers; tests/reuse_support.py). The learnware's predict starts `/usr/bin/sleep` for a
marked input, so the test can see from outside that the call is inside the worker before it
kills the worker's runner process. Expected: that call fails cleanly and at once
(UNAVAILABLE, saying the sandbox died, not a hang or INTERNAL), the kill is counted
(`lwdock_reuse_sandbox_worker_kills_total{reason="died"}`), and the next call succeeds on a
new worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from prometheus_client import REGISTRY

from lwdock.common.v1 import learnware_pb2
from lwdock.embedded_db import scratch_database
from lwdock.reuse.v1 import resources_pb2, reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.tensors import from_numpy, to_numpy
from tests.reuse_support import hostile_model, make_package, semantic_json, start_market

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/sleep"), reason="needs /usr/bin/sleep inside the sandbox"
)

# Rows whose first value is 1000 make predict wait on a child process (visible from outside).
SLOW_MARK = 1000.0
PREDICT = f"""
if X[0, 0] == {SLOW_MARK}:
    import subprocess
    subprocess.run(["/usr/bin/sleep", "20"], check=False)
return np.asarray(X)[:, :1] * 2.0
"""


def predict_request(name: str, rows: np.ndarray) -> reuse_service_pb2.PredictRequest:
    return reuse_service_pb2.PredictRequest(
        learnwares=resources_pb2.LearnwareSelection(learnwares=[name]), input=from_numpy(rows)
    )


def runners_of(package_sha256: str) -> list[psutil.Process]:
    """Runner processes of the workers holding this package (descendants of bwrap)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if not any(package_sha256 in arg for arg in process.cmdline()):
                continue
            found += [
                child
                for child in process.children(recursive=True)
                if any(arg.endswith("runner.py") for arg in child.cmdline())
            ]
        except psutil.Error:
            continue
    return found


async def sleeping_runner(package_sha256: str, within_s: float = 20.0) -> psutil.Process:
    """The runner whose predict is in progress (it has the `sleep` child)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for runner in runners_of(package_sha256):
            try:
                if any(c.name() == "sleep" for c in runner.children(recursive=True)):
                    return runner
            except psutil.Error:
                continue
        await asyncio.sleep(0.05)
    pytest.fail("no worker ever started the slow predict")


def kills(reason: str) -> float:
    value = REGISTRY.get_sample_value("lwdock_reuse_sandbox_worker_kills_total", {"reason": reason})
    return value or 0.0


async def test_worker_killed_mid_predict(database_url: str, tmp_path: Path) -> None:
    with scratch_database(database_url, "lwdock_fault_reuse") as url:
        market = await start_market(tmp_path, url)
        try:
            package = make_package(hostile_model(PREDICT), dim=3, output_shape=(1,))
            sha256 = hashlib.sha256(package).hexdigest()
            uploaded = await market.upload(package, semantic_json("Sleepy", 3))
            checked = await market.wait_checked(uploaded.name)
            assert checked.state == learnware_pb2.LEARNWARE_STATE_ACTIVE, checked.state_reason
            stub = reuse_service_pb2_grpc.ReuseServiceStub(market.channel(market.reuse.address))
            fast = np.arange(6, dtype=np.float64).reshape(2, 3)
            slow = fast.copy()
            slow[0, 0] = SLOW_MARK

            warm = await stub.Predict(predict_request(checked.name, fast), timeout=60)
            assert np.allclose(to_numpy(warm.output).ravel(), [0.0, 6.0])
            died_before = kills("died")

            call = asyncio.ensure_future(
                stub.Predict(predict_request(checked.name, slow), timeout=60)
            )
            runner = await sleeping_runner(sha256)
            killed_at = time.monotonic()
            os.kill(runner.pid, signal.SIGKILL)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call
            assert time.monotonic() - killed_at < 10, "the call did not fail promptly"
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
            assert "died" in (failed.value.details() or "")
            assert kills("died") == died_before + 1

            # The next call gets a fresh worker and succeeds.
            again = await stub.Predict(predict_request(checked.name, fast), timeout=60)
            assert np.allclose(to_numpy(again.output).ravel(), [0.0, 6.0])
            assert [r.pid for r in runners_of(sha256)] != [runner.pid]
        finally:
            await market.stop()
