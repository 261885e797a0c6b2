"""The SDK against real services: uploads checked by reuse_service's sandbox (ACTIVE or
REJECTED), downloads, predictions (unary and streamed), typed errors with the server's field
violations, the blocking client, and the CLI's submit exit codes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from lwdock.client import (
    AsyncLearnwareClient,
    LearnwareClient,
    State,
    Submission,
    aio,
    rpc_status,
)
from lwdock.client.commands import EXIT_CONFLICT, EXIT_PENDING, EXIT_REJECTED
from lwdock.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from lwdock.semantic.checker import Semantic
from tests.sdk_support import Stack, Trained, digits_learnware, run_cli, running_stack


@pytest_asyncio.fixture(scope="module")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path_factory.mktemp("sdk-home")) as running:
        yield running


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncLearnwareClient]:
    async with AsyncLearnwareClient(stack.endpoints, stack.admin_token) as opened:
        yield opened


@pytest.fixture(scope="module")
def good() -> Trained:
    return digits_learnware((0, 1, 2), "sdk-digits-012")


@pytest_asyncio.fixture(scope="module")
async def submitted(stack: Stack, good: Trained) -> Submission:
    async with AsyncLearnwareClient(stack.endpoints, stack.admin_token) as client:
        return await client.submit(good.package, good.semantic, timeout_s=120)


async def test_submit_waits_for_the_check_then_predicts_like_the_model(
    client: AsyncLearnwareClient, good: Trained, submitted: Submission
) -> None:
    done = submitted
    assert done.state is State.ACTIVE, done.reason
    assert done.report is not None and done.report.passed
    fetched = await client.get_learnware(done.id)
    assert fetched.sha256 == hashlib.sha256(good.package).hexdigest()
    assert fetched.semantic.name == "sdk-digits-012"

    prediction = await client.predict(done.id, good.X[:40])
    assert prediction.rows == 40
    np.testing.assert_array_equal(prediction.output.reshape(-1), good.model.predict(good.X[:40]))


async def test_a_package_whose_outputs_are_wrong_is_rejected_with_a_reason(
    client: AsyncLearnwareClient,
) -> None:
    broken = digits_learnware((3, 4, 5), "sdk-digits-broken", broken=True)
    created = await client.upload(broken.package, broken.semantic)
    assert created.state is State.PENDING
    settled = await client.wait_checked(created.id, timeout_s=120)
    assert settled.state is State.REJECTED
    assert settled.state_reason
    report = await client.check_report(created.id)
    assert report is not None and not report.passed
    assert "shape" in (report.reason + report.log).lower()


async def test_download_returns_the_uploaded_bytes(
    client: AsyncLearnwareClient, tmp_path: Path
) -> None:
    other = digits_learnware((6, 7), "sdk-digits-67", seed=1)
    created = await client.upload(other.package, other.semantic)
    target = tmp_path / "copy.zip"
    data = await client.download(created.id, target)
    assert data == other.package
    assert target.read_bytes() == other.package


async def test_server_errors_are_typed_and_carry_field_violations(
    client: AsyncLearnwareClient, stack: Stack, good: Trained
) -> None:
    bad = Semantic(**{**good.semantic.__dict__, "name": "ab", "license": "WTFPL"})
    with pytest.raises(InvalidArgument) as caught:
        await client.upload(good.package, bad)
    status = rpc_status(caught.value)
    assert status is not None and status.code == "INVALID_ARGUMENT"
    assert status.service == "registry"
    fields = {v.field for v in caught.value.violations}
    assert {"semantic_specification.name", "semantic_specification.license"} <= fields
    assert {v.field for v in status.field_violations} == fields

    with pytest.raises(NotFound) as missing:
        await client.get_learnware("does-not-exist")
    assert rpc_status(missing.value).code == "NOT_FOUND"  # type: ignore[union-attr]

    async with AsyncLearnwareClient(stack.endpoints, "") as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.upload(good.package, good.semantic)
    async with AsyncLearnwareClient(stack.endpoints, stack.reader_token) as reader:
        with pytest.raises(PermissionDenied) as denied:
            await reader.upload(good.package, good.semantic)
    assert rpc_status(denied.value).code == "PERMISSION_DENIED"  # type: ignore[union-attr]


async def test_the_blocking_client_gives_the_same_results_and_errors(stack: Stack) -> None:
    other = digits_learnware((8, 9), "sdk-digits-89", seed=2)

    def use_it() -> tuple[str, str, type[BaseException]]:
        with LearnwareClient(stack.endpoints, stack.admin_token, progress=False) as market:
            created = market.upload(other.package, other.semantic)
            listed = market.list_learnwares('name = "sdk-digits-89"')
            try:
                market.get_learnware("nope")
            except NotFound as error:
                raised: type[BaseException] = type(error)
            return created.id, ",".join(lw.id for lw in listed), raised

    created, listed, raised = await asyncio.to_thread(use_it)
    assert created in listed.split(",")
    assert raised is NotFound


async def test_large_inputs_stream_through_stream_predict(
    client: AsyncLearnwareClient,
    good: Trained,
    submitted: Submission,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aio, "UNARY_PREDICT_MAX_BYTES", 0)  # every input counts as large
    X = np.tile(good.X, (5, 1))
    prediction = await client.predict(submitted.id, X)
    np.testing.assert_array_equal(prediction.output.reshape(-1), good.model.predict(X))


async def test_cli_submit_exit_codes_say_rejected_and_still_pending(
    stack: Stack, tmp_path: Path
) -> None:
    broken = digits_learnware((1, 7), "sdk-cli-broken", seed=5, broken=True)
    (tmp_path / "broken.zip").write_bytes(broken.package)
    (tmp_path / "semantic.json").write_text(json.dumps(broken.semantic.to_reference_dict()))
    code, stdout, stderr = await run_cli(
        stack, "submit", str(tmp_path / "broken.zip"), "--semantic",
        str(tmp_path / "semantic.json"), "--wait", "--json",
    )  # fmt: skip
    assert code == EXIT_REJECTED, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["state"] == "REJECTED" and result["reason"]

    slow = digits_learnware((2, 8), "sdk-cli-pending", seed=6)
    (tmp_path / "slow.zip").write_bytes(slow.package)
    (tmp_path / "slow.json").write_text(json.dumps(slow.semantic.to_reference_dict()))
    code, stdout, stderr = await run_cli(
        stack, "submit", str(tmp_path / "slow.zip"), "--semantic", str(tmp_path / "slow.json"),
        "--wait", "--wait-timeout", "0", "--json",
    )  # fmt: skip
    assert code == EXIT_PENDING, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["state"] in ("PENDING", "CHECKING")

    # The same package again: the registry holds one learnware per package -> conflict, 7.
    code, stdout, stderr = await run_cli(
        stack, "submit", str(tmp_path / "slow.zip"), "--semantic", str(tmp_path / "slow.json"),
        "--json",
    )  # fmt: skip
    assert code == EXIT_CONFLICT, stderr
    error = json.loads(stdout.strip().splitlines()[-1])["error"]
    assert (error["code"], error["service"]) == ("ALREADY_EXISTS", "registry")
    assert error["request_id"]
