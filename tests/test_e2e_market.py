"""End to end through the four running services, as a user does it: learnwares packed with
the SDK are uploaded, checked in reuse_service's sandbox (ACTIVE), indexed by search_service
from the registry's change feed, found by the RKME of a user's data, and reused (one
learnware, a job-selected mixture, a labelled reuser) with the right predictions; then the
same through the `lwdock` CLI as subprocesses, and `lwdock demo`."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from sklearn.datasets import load_digits

from lwdock.client import AsyncLearnwareClient, State, Strategy, fit_table
from lwdock.client.commands import EXIT_INVALID, EXIT_OK
from lwdock.search.v1 import resources_pb2 as search_resources
from tests.sdk_support import Stack, Trained, digits_learnware, run_cli, running_stack

GROUPS = {"a": (0, 1, 2), "b": (3, 4, 5), "c": (6, 7, 8)}
PREFIX = "e2e-digits"


@pytest_asyncio.fixture(scope="module")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path_factory.mktemp("e2e-home")) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[AsyncLearnwareClient]:
    async with AsyncLearnwareClient(stack.endpoints, stack.admin_token) as opened:
        yield opened


def user_data(classes: tuple[int, ...], rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits (pixels / 16) of `classes`, drawn from the other half of the data set than the
    learnwares' training rows are mostly drawn from."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(100 + seed)
    idx = rng.permutation(np.flatnonzero(np.isin(y, classes)))[:rows]
    return X[idx] / 16.0, y[idx]


async def wait_searchable(client: AsyncLearnwareClient, ids: set[str], text: str) -> None:
    """Search follows the registry's change feed: poll until it returns every id."""
    query = search_resources.SemanticQuery(text=text)
    deadline = time.monotonic() + 60
    while True:
        found = {m.id for m in (await client.search(query, page_size=50)).single}
        if ids <= found:
            return
        assert time.monotonic() < deadline, f"not searchable after 60 s: {ids - found}"
        await asyncio.sleep(0.3)


@pytest_asyncio.fixture(scope="module")
async def market(client: AsyncLearnwareClient) -> dict[str, tuple[str, Trained]]:
    """Three ACTIVE learnwares trained on disjoint digit groups."""
    trained = {
        key: digits_learnware(classes, f"{PREFIX}-{key}", seed=i, rows=150)
        for i, (key, classes) in enumerate(GROUPS.items())
    }
    done = await asyncio.gather(
        *(client.submit(t.package, t.semantic, timeout_s=150) for t in trained.values())
    )
    for submission in done:
        assert submission.state is State.ACTIVE, submission.reason
    ids = {key: s.id for key, s in zip(trained, done, strict=True)}
    return {key: (ids[key], trained[key]) for key in trained}


@pytest_asyncio.fixture(scope="module")
async def searchable(
    client: AsyncLearnwareClient, market: dict[str, tuple[str, Trained]]
) -> dict[str, tuple[str, Trained]]:
    """The market once search_service has indexed it (from the registry's change feed)."""
    await wait_searchable(client, {lw_id for lw_id, _ in market.values()}, PREFIX)
    return market


async def test_the_matching_learnware_is_found_and_predicts_right(
    client: AsyncLearnwareClient, searchable: dict[str, tuple[str, Trained]]
) -> None:
    market = searchable
    X, y = user_data(GROUPS["b"], 120, seed=1)
    spec = fit_table(X, reduced_set_size=30)
    found = await client.search(search_resources.SemanticQuery(text=PREFIX), spec)
    b_id, b = market["b"]
    assert found.single[0].id == b_id
    assert all(found.single[0].mmd2 < m.mmd2 for m in found.single[1:])
    assert found.single[0].learnware is None  # not asked for

    prediction = await client.predict(b_id, X)
    np.testing.assert_array_equal(prediction.output.reshape(-1), b.model.predict(X))
    assert np.mean(prediction.output.reshape(-1) == y) > 0.9


async def test_a_mixed_task_gets_a_mixture_that_the_job_selector_routes(
    client: AsyncLearnwareClient, searchable: dict[str, tuple[str, Trained]]
) -> None:
    market = searchable
    X, y = user_data((0, 1, 6, 7), 160, seed=2)
    spec = fit_table(X, reduced_set_size=30)
    found = await client.search(search_resources.SemanticQuery(text=PREFIX), spec, max_mixture=3)
    assert found.mixture is not None
    a_id, c_id = market["a"][0], market["c"][0]
    assert {a_id, c_id} <= set(found.mixture.ids)
    assert abs(sum(found.mixture.weights) - 1) < 1e-6

    routed = await client.predict(
        found.mixture.ids, X, strategy=Strategy.JOB_SELECTOR, user_spec=spec
    )
    assert routed.strategy is Strategy.JOB_SELECTOR
    accuracy = np.mean(routed.output.reshape(-1) == y)
    singles = [np.mean(t.model.predict(X) == y) for _, t in market.values()]
    assert accuracy > max(singles) + 0.2, (accuracy, singles)


async def test_a_labelled_reuser_learns_from_the_users_labels(
    client: AsyncLearnwareClient, market: dict[str, tuple[str, Trained]]
) -> None:
    X, y = user_data((2, 3, 4), 200, seed=3)
    ids = [market["a"][0], market["b"][0]]
    reuser = await client.create_reuser(
        ids, X[:120], y[:120], strategy="feature_augment", mode="classification", timeout_s=180
    )
    assert reuser.strategy is Strategy.FEATURE_AUGMENT
    prediction = await client.predict_with_reuser(reuser, X[120:])
    assert prediction.rows == 80
    assert np.mean(prediction.output.reshape(-1) == y[120:]) > 0.85
    await client.delete_reuser(reuser)


async def test_the_cli_end_to_end_with_the_local_admin_token(
    stack: Stack, searchable: dict[str, tuple[str, Trained]], tmp_path: Path
) -> None:
    """No --token anywhere: the CLI reads $LWDOCK_HOME/admin.token as on a machine where
    `lwdock up` runs; addresses come from LWDOCK_*_ADDRESS."""
    trained = digits_learnware((5, 6, 9), f"{PREFIX}-cli", seed=7, rows=150)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(trained.model))
    np.save(tmp_path / "train.npy", trained.X)
    (tmp_path / "semantic.json").write_text(json.dumps(trained.semantic.to_reference_dict()))

    async def cli(*args: str | Path) -> dict:
        code, stdout, stderr = await run_cli(stack, *map(str, args))
        assert code == EXIT_OK, stderr
        return json.loads(stdout.strip().splitlines()[-1])

    await cli("spec", "fit", tmp_path / "train.npy", "-o", tmp_path / "spec.json", "--k", "30",
              "--json")  # fmt: skip
    await cli("pack", tmp_path / "model.pkl", "-o", tmp_path / "lw.zip", "--spec",
              tmp_path / "spec.json", "--semantic", tmp_path / "semantic.json",
              "--output-shape", "1", "--json")  # fmt: skip
    submitted = await cli("submit", tmp_path / "lw.zip", "--semantic", tmp_path / "semantic.json",
                          "--wait", "--json")  # fmt: skip
    assert submitted["state"] == "ACTIVE", submitted
    new_id = submitted["id"]
    status = await cli("status", new_id, "--json")
    assert status["state"] == "ACTIVE" and status["check"]["passed"] is True

    X, _ = user_data((5, 6, 9), 100, seed=4)
    np.save(tmp_path / "user.npy", X)
    await cli("spec", "fit", tmp_path / "user.npy", "-o", tmp_path / "user.json", "--k", "30",
              "--json")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        found = await cli("search", "--spec", tmp_path / "user.json", "--text", PREFIX, "--json")
        if found["single"] and found["single"][0]["id"] == new_id:
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.5)
    assert set(found["single"][0]) >= {"id", "mmd", "score"}
    assert found["mixture"] is None or set(found["mixture"]) >= {"ids", "weights", "mmd", "score"}

    reused = await cli("reuse", "--learnware", new_id, "--input", tmp_path / "user.npy",
                       "--output", tmp_path / "y.npy", "--json")  # fmt: skip
    assert reused["rows"] == 100 and reused["strategy"] == "single"
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy").reshape(-1), trained.model.predict(X))

    fetched = await cli("download", new_id, "-o", tmp_path / "copy.zip", "--json")
    assert (tmp_path / "copy.zip").read_bytes() == (tmp_path / "lw.zip").read_bytes()
    assert fetched["size"] == (tmp_path / "lw.zip").stat().st_size

    # A server error: status code and field violations on stderr, exit 3, JSON error line.
    bad = trained.semantic.to_reference_dict()
    bad["Name"]["Values"] = "x"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, stdout, stderr = await run_cli(
        stack, "submit", str(tmp_path / "lw.zip"), "--semantic", str(tmp_path / "bad.json"),
        "--json",
    )  # fmt: skip
    assert code == EXIT_INVALID
    assert "INVALID_ARGUMENT" in stderr and "semantic_specification.name" in stderr
    error = json.loads(stdout.strip().splitlines()[-1])["error"]
    assert error["service"] == "registry"
    assert "semantic_specification.name" in {v["field"] for v in error["field_violations"]}


async def test_the_demo_prints_the_reference_comparison(stack: Stack) -> None:
    code, stdout, stderr = await run_cli(
        stack, "demo", "--learnwares", "4", "--users", "2", "--json", limit_s=300
    )
    assert code == EXIT_OK, stderr
    table = json.loads(stdout.strip().splitlines()[-1])
    keys = ("mean_in_market", "best_in_market", "top1_reuse", "average_ensemble", "job_selector")
    assert all(0.0 <= table[k] <= 1.0 for k in keys), table
    assert table["best_in_market"] <= table["mean_in_market"]
    assert table["top1_reuse"] < table["mean_in_market"]
    assert (table["users"], table["learnwares"]) == (2, 4)
