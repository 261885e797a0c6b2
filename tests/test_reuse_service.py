"""reuse_service over gRPC with a real registry (PostgreSQL, check worker) and real sandboxes:
learnwares uploaded here are checked by the real CheckLearnware, then run alone and combined
by every strategy; outputs compared with the same models computed directly in this process
(they are this test's own models) and with the reusers fitted directly on those outputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import pytest_asyncio
import sklearn.linear_model
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

from lwdock.common.v1 import learnware_pb2, specification_pb2
from lwdock.embedded_db import scratch_database
from lwdock.registry.v1 import registry_service_pb2 as registry_pb
from lwdock.registry.v1 import registry_service_pb2_grpc
from lwdock.reuse.v1 import resources_pb2, reuse_service_pb2, reuse_service_pb2_grpc
from lwdock.rkme.spec import RKMESpec
from lwdock.streams import tensor_chunks, tensor_header
from lwdock.tensors import from_numpy, to_numpy
from reuse_service.reusers import EnsemblePruning, FeatureAugment, JobSelector
from reuse_service.sandbox import probe_bubblewrap
from tests.reuse_support import (
    FIXTURES,
    Market,
    hostile_model,
    make_package,
    model_package,
    semantic_json,
    spec_json_for,
    start_market,
)

ACTIVE = learnware_pb2.LEARNWARE_STATE_ACTIVE
REJECTED = learnware_pb2.LEARNWARE_STATE_REJECTED
S = reuse_service_pb2
R = resources_pb2
CENTRES = {"west": -3.0, "east": 3.0, "mid": 0.0}
COEF = {"west": [1.0, 2.0, -1.0], "east": [-2.0, 0.5, 1.0], "mid": [0.5, 0.5, 0.5]}


def region(name: str, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(CENTRES[name], 1.0, size=(n, 3))


@dataclass
class World:
    market: Market
    stub: reuse_service_pb2_grpc.ReuseServiceStub
    names: dict[str, str] = field(default_factory=dict)
    models: dict[str, object] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module")
async def world(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    if not (await probe_bubblewrap()).available:
        pytest.skip("no sandbox on this host")
    home = tmp_path_factory.mktemp("reuse-market")
    with scratch_database(database_url, "lwdock_reuse") as url:
        market = await start_market(home, url)
        world = World(
            market, reuse_service_pb2_grpc.ReuseServiceStub(market.channel(market.reuse.address))
        )
        try:
            uploads = {}
            fixture = (FIXTURES / "learnware_digits_svc.zip").read_bytes()
            uploads["digits"] = (
                fixture,
                (FIXTURES / "learnware_digits_svc.semantic.json").read_text(),
            )
            for i, name in enumerate(CENTRES):  # regression learnwares
                x = region(name, 300, i)
                model = sklearn.linear_model.LinearRegression().fit(x, x @ COEF[name] + i)
                world.models[name] = model
                world.specs[name] = spec_json_for(x, seed=i)
                uploads[name] = (
                    model_package(model, 3, (1,), world.specs[name]),
                    semantic_json(f"region-{name}", 3),
                )
            for i in range(3):  # classifiers (3 classes) returning probabilities
                x = np.random.default_rng(10 + i).normal(size=(300, 3))
                y = (x[:, i] > 0).astype(int) + (x[:, (i + 1) % 3] > 1).astype(int)
                model = sklearn.linear_model.LogisticRegression().fit(x, y)
                world.models[f"clf{i}"] = model
                uploads[f"clf{i}"] = (
                    model_package(model, 3, (3,), spec_json_for(x, seed=i), method="predict_proba"),
                    semantic_json(f"classifier-{i}", 3, task="Classification", out_dim=3),
                )
            crash = "if X[0, 0] > 1e9:\n    os._exit(3)\nreturn X[:, 0]"
            uploads["fragile"] = (
                make_package(hostile_model(crash)),
                semantic_json("fragile-one", 3),
            )
            port = market.reuse.port
            call_home = f"if X[0, 0] > 1e9:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\nreturn X[:, 0]"  # noqa: E501
            uploads["caller"] = (
                make_package(hostile_model(call_home)),
                semantic_json("caller-one", 3),
            )
            uploads["short"] = (
                make_package(hostile_model("return X[:2, 0]")),
                semantic_json("short-one", 3),
            )
            uploads["needs"] = (
                make_package(
                    hostile_model("return X[:, 0]"),
                    requirements="lwdock-no-such-package==9.9\nnumpy\n",
                ),
                semantic_json("needs-more", 3),
            )
            for key, (data, sem) in uploads.items():
                world.names[key] = (await market.upload(data, sem)).name
            yield world
        finally:
            await market.stop()


async def checked(world: World, key: str) -> learnware_pb2.Learnware:
    return await world.market.wait_checked(world.names[key])


def selection(world: World, *keys: str, weights: tuple[float, ...] = ()) -> R.LearnwareSelection:
    return R.LearnwareSelection(learnwares=[world.names[k] for k in keys], weights=weights)


async def predict(world: World, x: np.ndarray, *keys: str, **kwargs: object) -> S.PredictResponse:
    weights = kwargs.pop("weights", ())
    return await world.stub.Predict(
        S.PredictRequest(
            learnwares=selection(world, *keys, weights=weights), input=from_numpy(x), **kwargs
        ),  # type: ignore[arg-type]
        timeout=60,
    )


async def test_checks_pass_and_the_reference_fixture_predicts_exactly(world: World) -> None:
    lw = await checked(world, "digits")
    assert lw.state == ACTIVE, lw.state_reason
    registry = registry_service_pb2_grpc.RegistryServiceStub(
        world.market.channel(world.market.registry.address)
    )
    report = await registry.GetCheckReport(
        registry_pb.GetCheckReportRequest(name=f"{lw.name}/checkReport")
    )
    assert report.passed and "herded from the spec" in report.log and "random rows" in report.log
    # Asked by name only, reuse fetches the package from the registry itself.
    again = await world.stub.CheckLearnware(
        S.CheckLearnwareRequest(
            learnware=lw.name, semantic_specification=lw.semantic_specification
        ),
        timeout=60,
    )
    assert again.passed, again.reason

    x = np.load(FIXTURES / "digits_classes0to4_first100.npy")
    expected = np.load(FIXTURES / "digits_classes0to4_first100_pred.npy")
    reply = await predict(world, x, "digits", return_member_outputs=True)
    np.testing.assert_array_equal(to_numpy(reply.output), expected)
    assert reply.strategy == R.REUSE_STRATEGY_SINGLE
    (member,) = reply.members
    assert member.learnware == lw.name and member.status.code == 0
    np.testing.assert_array_equal(to_numpy(member.output), expected)

    # The same through StreamPredict, in small chunks both ways.
    config = S.StreamPredictConfig(learnwares=selection(world, "digits"))
    requests = [
        S.StreamPredictRequest(config=config),
        S.StreamPredictRequest(header=tensor_header(x)),
    ]
    requests += [S.StreamPredictRequest(chunk=c) for c in tensor_chunks(x, 4096)]
    replies = [r async for r in world.stub.StreamPredict(iter(requests), timeout=60)]
    header, chunks, summary = replies[0].header, replies[1:-1], replies[-1].summary
    data = b"".join(r.chunk for r in chunks)
    streamed = np.frombuffer(data, dtype=expected.dtype.newbyteorder("<")).reshape(
        tuple(header.shape)
    )
    np.testing.assert_array_equal(streamed, expected)
    assert summary.members[0].learnware == lw.name


async def test_failed_checks_are_rejected_with_reasons(world: World) -> None:
    short = await checked(world, "short")
    assert short.state == REJECTED and "rows" in short.state_reason
    needs = await checked(world, "needs")
    assert needs.state == REJECTED
    assert "lwdock-no-such-package==9.9" in needs.state_reason and "numpy" not in needs.state_reason
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, np.zeros((2, 3)), "short")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "REJECTED, not ACTIVE" in caught.value.details()


async def test_averaging_strategies_match_numpy(world: World) -> None:
    for key in ("west", "east", "mid", "clf0", "clf1", "clf2"):
        assert (await checked(world, key)).state == ACTIVE
    x = np.random.default_rng(5).normal(size=(50, 3))
    direct = {k: world.models[k].predict(x) for k in ("west", "east", "mid")}  # type: ignore[attr-defined]
    reply = await predict(world, x, "west", "east", "mid")
    assert reply.strategy == R.REUSE_STRATEGY_AVERAGE_MEAN
    np.testing.assert_allclose(to_numpy(reply.output), np.mean(list(direct.values()), axis=0))
    weighted = await predict(world, x, "west", "east", weights=(3.0, 1.0))
    np.testing.assert_allclose(
        to_numpy(weighted.output), 0.75 * direct["west"] + 0.25 * direct["east"]
    )

    proba = [world.models[f"clf{i}"].predict_proba(x) for i in range(3)]  # type: ignore[attr-defined]
    by_prob = await predict(
        world, x, "clf0", "clf1", "clf2", strategy=R.REUSE_STRATEGY_VOTE_BY_PROBABILITY
    )
    np.testing.assert_array_equal(to_numpy(by_prob.output), np.mean(proba, axis=0).argmax(axis=1))
    by_label = await predict(
        world, x, "clf0", "clf1", "clf2", strategy=R.REUSE_STRATEGY_VOTE_BY_LABEL
    )
    labels = np.stack([p.argmax(axis=1) for p in proba], axis=1)
    majority = [np.bincount(row, minlength=3).argmax() for row in labels]  # ties -> smallest
    np.testing.assert_array_equal(to_numpy(by_label.output), majority)


async def test_job_selector_routes_rows_to_their_learnware(world: World) -> None:
    for key in ("west", "east"):
        assert (await checked(world, key)).state == ACTIVE
    x = np.concatenate([region("west", 40, 101), region("east", 40, 102)])
    reply = await predict(world, x, "west", "east", strategy=R.REUSE_STRATEGY_JOB_SELECTOR)
    specs = [RKMESpec.from_reference_json(world.specs[k]) for k in ("west", "east")]
    chosen = JobSelector.fit(specs).select(x)
    assert (chosen[:40] == 0).mean() > 0.9 and (chosen[40:] == 1).mean() > 0.9
    west, east = (world.models[k].predict(x) for k in ("west", "east"))  # type: ignore[attr-defined]
    np.testing.assert_allclose(to_numpy(reply.output), np.where(chosen == 0, west, east))
    # The user's own spec is accepted (the reference's way to weigh members).
    user = specification_pb2.StatisticalSpecification(reference_json=spec_json_for(x))
    again = await predict(
        world, x, "west", "east", strategy=R.REUSE_STRATEGY_JOB_SELECTOR, user_specification=user
    )
    assert to_numpy(again.output).shape == (80,)


async def _create(
    world: World, strategy: int, mode: str, keys: tuple[str, ...], x: np.ndarray, y: np.ndarray
) -> R.Reuser:
    config = S.CreateReuserConfig(
        learnwares=selection(world, *keys),
        strategy=strategy,  # type: ignore[arg-type]
        mode=mode,
        request_id=f"create-{strategy}-{mode}",
    )
    requests = [
        S.CreateReuserRequest(config=config),
        S.CreateReuserRequest(x_header=tensor_header(x)),
    ]
    requests += [S.CreateReuserRequest(x_chunk=c) for c in tensor_chunks(x)]
    requests += [S.CreateReuserRequest(y_header=tensor_header(y))]
    requests += [S.CreateReuserRequest(y_chunk=c) for c in tensor_chunks(y)]
    operation = await world.stub.CreateReuser(iter(requests), timeout=60)
    retried = await world.stub.CreateReuser(iter(requests), timeout=60)  # same request_id
    assert retried.name == operation.name
    operations = operations_pb2_grpc.OperationsStub(
        world.market.channel(world.market.reuse.address)
    )
    while not operation.done:
        operation = await operations.WaitOperation(
            operations_pb2.WaitOperationRequest(
                name=operation.name, timeout=duration_pb2.Duration(seconds=10)
            ),
            timeout=30,
        )
    assert not operation.HasField("error"), operation.error
    reuser = R.Reuser()
    operation.response.Unpack(reuser)
    return reuser


async def test_fitted_reusers_are_resources(world: World) -> None:
    for key in ("west", "east", "mid", "clf0", "clf1", "clf2"):
        assert (await checked(world, key)).state == ACTIVE
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    x_new = rng.normal(size=(30, 3))
    clfs = [world.models[f"clf{i}"] for i in range(3)]

    pruning = await _create(
        world, R.REUSE_STRATEGY_ENSEMBLE_PRUNING, "classification", ("clf0", "clf1", "clf2"), x, y
    )
    assert pruning.name.startswith("reusers/") and pruning.mode == "classification"
    direct = EnsemblePruning.fit([m.predict_proba(x) for m in clfs], y, mode="classification")  # type: ignore[attr-defined]
    reply = await world.stub.Predict(
        S.PredictRequest(reuser=pruning.name, input=from_numpy(x_new)), timeout=60
    )
    assert reply.strategy == R.REUSE_STRATEGY_ENSEMBLE_PRUNING
    np.testing.assert_array_equal(
        to_numpy(reply.output), direct.predict([m.predict_proba(x_new) for m in clfs])
    )  # type: ignore[attr-defined]

    regs = [world.models[k] for k in ("west", "east", "mid")]
    target = x @ [1.0, 1.0, 0.0]
    augment = await _create(
        world, R.REUSE_STRATEGY_FEATURE_AUGMENT, "regression", ("west", "east", "mid"), x, target
    )
    direct_fa = FeatureAugment.fit(x, [m.predict(x) for m in regs], target, mode="regression")  # type: ignore[attr-defined]
    reply = await world.stub.Predict(
        S.PredictRequest(reuser=augment.name, input=from_numpy(x_new)), timeout=60
    )
    np.testing.assert_allclose(
        to_numpy(reply.output), direct_fa.predict(x_new, [m.predict(x_new) for m in regs])
    )  # type: ignore[attr-defined]

    got = await world.stub.GetReuser(S.GetReuserRequest(name=augment.name), timeout=10)
    assert got.strategy == R.REUSE_STRATEGY_FEATURE_AUGMENT and len(got.learnwares) == 3
    await world.stub.DeleteReuser(S.DeleteReuserRequest(name=augment.name), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.stub.GetReuser(S.GetReuserRequest(name=augment.name), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, x, "west", strategy=R.REUSE_STRATEGY_FEATURE_AUGMENT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_hostile_learnwares_fail_clearly_and_the_service_keeps_serving(world: World) -> None:
    for key in ("fragile", "caller", "west"):
        assert (await checked(world, key)).state == ACTIVE
    x = np.random.default_rng(9).normal(size=(10, 3))
    boom = x.copy()
    boom[0, 0] = 1e10
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, boom, "fragile")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "died" in caught.value.details()
    np.testing.assert_allclose(to_numpy((await predict(world, x, "fragile")).output), x[:, 0])

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a socket to the service's own port
        await predict(world, boom, "caller")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "predict: ConnectionRefusedError" in caught.value.details()  # its own empty network

    # In a combination, a failing member is reported and the others still count.
    reply = await predict(world, boom, "fragile", "west")
    codes = {m.learnware: m.status.code for m in reply.members}
    assert (
        codes[world.names["west"]] == 0
        and codes[world.names["fragile"]] == grpc.StatusCode.UNAVAILABLE.value[0]
    )
    np.testing.assert_allclose(to_numpy(reply.output), world.models["west"].predict(boom))  # type: ignore[attr-defined]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, np.zeros((4, 5)), "west")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, x, "west", "east", strategy=R.REUSE_STRATEGY_SINGLE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.stub.Predict(
            S.PredictRequest(
                learnwares=R.LearnwareSelection(learnwares=["learnwares/nope-404"]),
                input=from_numpy(x),
            ),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = await world.stub.GetRuntimeInfo(S.GetRuntimeInfoRequest(), timeout=10)
    assert info.sandbox_available and R.REUSE_STRATEGY_JOB_SELECTOR in info.strategies
    assert any(p.startswith("scikit-learn==") for p in info.runtimes[0].packages)


async def test_duplicate_members_and_zero_weight_survivors_are_refused(world: World) -> None:
    for key in ("fragile", "west"):
        assert (await checked(world, key)).state == ACTIVE
    x = np.random.default_rng(11).normal(size=(10, 3))
    west = world.names["west"]
    for spellings in ([west, west], [west, west.removeprefix("learnwares/")]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.stub.Predict(
                S.PredictRequest(
                    learnwares=R.LearnwareSelection(learnwares=spellings, weights=[1.0, 2.0]),
                    input=from_numpy(x),
                ),
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name each learnware once" in caught.value.details()
    # The only member with weight > 0 fails: no weighted average is left to give.
    boom = x.copy()
    boom[0, 0] = 1e10
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(world, boom, "west", "fragile", weights=(0.0, 1.0))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "weight 0" in caught.value.details() and "died" in caught.value.details()
    reply = await predict(world, x, "west", "fragile", weights=(0.0, 1.0))
    np.testing.assert_allclose(to_numpy(reply.output), x[:, 0])
