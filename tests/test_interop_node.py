"""A Node.js client, loading the contracts straight from protos/ (no generated code), calls
every running service: health, one real RPC each, and a rich error's decoded details.

The client lives in tests/interop/node/ (`make node-deps` installs its pinned packages). It runs
as a subprocess awaited with asyncio, since the servers share this process's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil

import pytest

from tests.conftest import FIXTURES, ROOT, Suite

NODE_DIR = ROOT / "tests" / "interop" / "node"
CLIENT = NODE_DIR / "client.js"
TIMEOUT_S = 60.0

SERVICE_NAMES = {
    "spec": "lwdock.spec.v1.SpecService",
    "registry": "lwdock.registry.v1.RegistryService",
    "search": "lwdock.search.v1.SearchService",
    "reuse": "lwdock.reuse.v1.ReuseService",
}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js >= 18) is not on PATH; install it, then run `make node-deps`")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"{NODE_DIR / 'node_modules'} is missing or incomplete: run `make node-deps`")
    return node


def _expected_distance() -> dict[str, float]:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    for pair in expected["pairs"]:
        if (pair["a"], pair["b"]) == ("table_a_d10", "table_b_d10"):
            return {"mmd2": pair["dist"], "inner_product": pair["inner_prod"]}
    raise AssertionError("expected.json has no table_a_d10/table_b_d10 pair")


async def _run_client(node: str, config: dict[str, object]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        json.dumps(config),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the Node.js client did not finish within {TIMEOUT_S} s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_node_client_calls_every_service(suite: Suite) -> None:
    node = _node()
    expected = _expected_distance()
    config = {
        "addresses": suite.addresses,
        "left_json_path": str(FIXTURES / "table_a_d10.rkme.json"),
        "right_json_path": str(FIXTURES / "table_b_d10.rkme.json"),
        "expected": expected,
        "protos_dir": str(ROOT / "protos"),
        "deadline_ms": 10_000,
    }
    code, stdout, stderr = await _run_client(node, config)
    assert code == 0, f"node client exited {code}\nstdout: {stdout}\nstderr: {stderr}"
    results = json.loads(stdout)
    assert results["ok"] is True

    for name, full_name in SERVICE_NAMES.items():
        assert results["health"][name] == {"": "SERVING", full_name: "SERVING"}, name

    for key in ("mmd2", "inner_product"):
        assert math.isclose(results["spec"][key], expected[key], rel_tol=1e-9), key

    error = results["spec_error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["status_code"] == 3
    assert "google.rpc.BadRequest" in error["detail_types"]
    assert "left" in [violation["field"] for violation in error["field_violations"]]

    data = results["registry"]["keys"]["Data"]
    assert {"Table", "Image", "Text"} <= set(data["values"])

    assert results["search"]["embedding_dimension"] > 0

    assert results["reuse"]["server_live"] is True
    assert isinstance(results["reuse"]["sandbox_available"], bool)
