"""The real grpcurl, with no proto files, sees and calls every service through reflection.

grpcurl runs as a child process while the servers run in this test's event loop, so it is
started with asyncio.create_subprocess_exec and awaited (a blocking subprocess.run would
stop the loop and deadlock against the servers).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass

import pytest

from tests.conftest import FIXTURES, Suite, venv_bin

SERVICES = {
    "spec": ["lwdock.spec.v1.SpecService"],
    "registry": ["lwdock.registry.v1.RegistryService"],
    "search": ["lwdock.search.v1.SearchService"],
    "reuse": ["lwdock.reuse.v1.ReuseService", "inference.GRPCInferenceService"],
}
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
DISTANCE = "lwdock.spec.v1.SpecService/ComputeSpecificationDistance"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def grpcurl(*args: str, max_time_s: int = 20) -> Result:
    """Run `grpcurl -plaintext -max-time N ARGS...` without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        venv_bin("grpcurl"),
        "-plaintext",
        "-max-time",
        str(max_time_s),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), max_time_s + 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"grpcurl {' '.join(args[:3])} did not finish in {max_time_s + 10}s")
    return Result(process.returncode or 0, stdout.decode(), stderr.decode())


def ok_json(result: Result) -> dict:
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)


def reference_spec(name: str) -> dict[str, str]:
    return {"reference_json": (FIXTURES / f"{name}.rkme.json").read_text()}


def expected_pair(a: str, b: str) -> dict:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    return next(p for p in expected["pairs"] if p["a"] == a and p["b"] == b)


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_list_shows_each_servers_services(suite: Suite, name: str) -> None:
    result = await grpcurl(suite.address(name), "list")
    assert result.returncode == 0, result.output
    listed = set(result.stdout.split())
    assert {*SERVICES[name], HEALTH, REFLECTION} <= listed, listed
    # A server lists only its own services.
    others = {s for other, names in SERVICES.items() if other != name for s in names}
    assert not listed & others, listed


async def test_list_methods_of_a_service(suite: Suite) -> None:
    result = await grpcurl(suite.address("spec"), "list", "lwdock.spec.v1.SpecService")
    assert result.returncode == 0, result.output
    assert DISTANCE.replace("/", ".") in result.stdout.split()
    assert "lwdock.spec.v1.SpecService.FitTableSpecification" in result.stdout.split()


async def test_describe_a_message_through_reflection(suite: Suite) -> None:
    address = suite.address("spec")
    result = await grpcurl(address, "describe", "lwdock.common.v1.RkmeSpecification")
    assert result.returncode == 0, result.output
    assert "message RkmeSpecification" in result.stdout
    assert "repeated double beta = 3;" in result.stdout
    assert "double gamma = 4;" in result.stdout
    assert ".lwdock.common.v1.Tensor z = 2;" in result.stdout

    request = await grpcurl(
        address, "describe", "lwdock.spec.v1.ComputeSpecificationDistanceRequest"
    )
    assert request.returncode == 0, request.output
    assert ".lwdock.common.v1.StatisticalSpecification left = 1" in request.stdout
    assert ".lwdock.common.v1.StatisticalSpecification right = 2" in request.stdout


async def test_describe_a_service_shows_streaming(suite: Suite) -> None:
    # `describe` of the service, not of `Service.Method`: Python's reflection answers
    # file_containing_symbol from protobuf's (upb) pool, which does not index method names.
    result = await grpcurl(
        suite.address("registry"), "describe", "lwdock.registry.v1.RegistryService"
    )
    assert result.returncode == 0, result.output
    assert "lwdock.registry.v1.RegistryService is a service:" in result.stdout
    assert (
        "rpc CreateLearnware ( stream .lwdock.registry.v1.CreateLearnwareRequest ) "
        "returns ( .lwdock.common.v1.Learnware );" in result.stdout
    ), result.stdout
    assert (
        "rpc WatchChanges ( .lwdock.registry.v1.WatchChangesRequest ) "
        "returns ( stream .lwdock.registry.v1.WatchChangesResponse );" in result.stdout
    ), result.stdout


async def test_health_check_serving_and_not_found(suite: Suite) -> None:
    address = suite.address("spec")
    body = json.dumps({"service": "lwdock.spec.v1.SpecService"})
    assert ok_json(await grpcurl("-d", body, address, f"{HEALTH}/Check")) == {"status": "SERVING"}
    assert ok_json(await grpcurl(address, f"{HEALTH}/Check")) == {"status": "SERVING"}

    unknown = json.dumps({"service": "no.such.Service"})
    result = await grpcurl("-d", unknown, address, f"{HEALTH}/Check")
    assert result.returncode == 64 + 5, result.output
    assert "Code: NotFound" in result.stderr, result.output


async def test_compute_specification_distance_matches_the_reference(suite: Suite) -> None:
    body = json.dumps(
        {"left": reference_spec("table_a_d10"), "right": reference_spec("table_b_d10")}
    )
    response = ok_json(await grpcurl("-d", body, suite.address("spec"), DISTANCE))
    # grpcurl 1.8.6 prints proto field names (inner_product, not innerProduct).
    expected = expected_pair("table_a_d10", "table_b_d10")
    assert math.isclose(response["mmd2"], expected["dist"], rel_tol=1e-9), response
    assert math.isclose(response["inner_product"], expected["inner_prod"], rel_tol=1e-9)
    left_self = expected_pair("table_a_d10", "table_a_d10")["inner_prod"]
    assert math.isclose(response["left_self_inner_product"], left_self, rel_tol=1e-9)


async def test_get_semantic_vocabulary(suite: Suite) -> None:
    response = ok_json(
        await grpcurl(
            suite.address("registry"), "lwdock.registry.v1.RegistryService/GetSemanticVocabulary"
        )
    )
    reference = json.loads((FIXTURES / "semantic_vocabulary.json").read_text())
    got = {k["key"]: (k["type"], k.get("values", [])) for k in response["keys"]}
    assert got == {
        key: (entry["Type"], entry.get("Values") or []) for key, entry in reference.items()
    }


async def test_kserve_server_live(suite: Suite) -> None:
    response = ok_json(
        await grpcurl(suite.address("reuse"), "inference.GRPCInferenceService/ServerLive")
    )
    assert response == {"live": True}


@pytest.mark.parametrize(
    "z_text",
    ["[[1, NaN]]", "[[1, Infinity]]", "[[1, -Infinity]]"],
    ids=["nan", "inf", "-inf"],
)
async def test_non_finite_reduced_set_is_invalid_argument(suite: Suite, z_text: str) -> None:
    bad = {"reference_json": '{"z": ' + z_text + ', "beta": [1], "gamma": 0.1}'}
    good = {"reference_json": '{"z": [[1, 2]], "beta": [1], "gamma": 0.1}'}
    body = json.dumps({"left": bad, "right": good})
    result = await grpcurl("-d", body, suite.address("spec"), DISTANCE)
    # grpcurl exits with 64 + the status code when the RPC fails.
    assert result.returncode == 64 + 3, result.output
    assert "Code: InvalidArgument" in result.stderr, result.output
    assert "left.reference_json.z" in result.stderr, result.output

    # The same request with a finite z on both sides is fine.
    control = json.dumps({"left": good, "right": good})
    response = ok_json(await grpcurl("-d", control, suite.address("spec"), DISTANCE))
    assert math.isclose(response["inner_product"], 1.0, rel_tol=1e-12)


async def test_unimplemented_rpc_says_so(suite: Suite) -> None:
    # search is implemented now; KServe's model repository extension is not served.
    result = await grpcurl(
        "-d",
        '{"model_name": "x"}',
        suite.address("reuse"),
        "inference.GRPCInferenceService/RepositoryModelLoad",
    )
    assert result.returncode == 64 + 12, result.output
    assert "Code: Unimplemented" in result.stderr, result.output
    assert "not implemented yet" in result.stderr, result.output
