"""The reusers (reuse_service.reusers) on small synthetic markets, against direct numpy
computations and the reference's documented behaviour (REFERENCE.md §9)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import threadpoolctl
from sklearn.linear_model import LogisticRegressionCV, RidgeCV

from lwdock.errors import InvalidArgument, LearnwareModelFailed
from lwdock.rkme.fit import fit_table_rkme
from lwdock.rkme.spec import RKMESpec, SpecType
from reuse_service.reusers import (
    EnsemblePruning,
    FeatureAugment,
    JobSelector,
    average_mean,
    vote_by_label,
    vote_by_probability,
)
from reuse_service.reusers.job_selector import mixture_weights, user_spec_from_rows
from tests.conftest import FIXTURES


def _field(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.violations[0].field


def _npz_round_trip(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Through np.savez / np.load(allow_pickle=False), as a store would keep them."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


# --- averaging ---------------------------------------------------------------------------------


def test_average_mean_is_the_per_column_mean() -> None:
    rng = np.random.default_rng(0)
    values = [rng.normal(size=50) for _ in range(3)]
    np.testing.assert_allclose(average_mean(values), np.mean(values, axis=0), rtol=0, atol=1e-15)
    assert average_mean(values).shape == (50,)

    scores = [rng.random((50, 4)) for _ in range(3)]
    mean = average_mean(scores)
    assert mean.shape == (50, 4)  # per column, not across columns (the reference's C6)
    np.testing.assert_allclose(mean, np.mean(np.stack(scores), axis=0), atol=1e-15)

    mixed = average_mean([values[0], values[1].reshape(-1, 1)])
    assert mixed.shape == (50, 1)
    np.testing.assert_allclose(mixed[:, 0], (values[0] + values[1]) / 2, atol=1e-15)
    assert average_mean([np.arange(4, dtype=np.int32)] * 2).dtype == np.float64


def test_vote_by_label_matches_bincount_and_breaks_ties_to_the_smallest() -> None:
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 4, size=200) for _ in range(5)]
    stacked = np.stack(labels, axis=1)
    expected = np.array([np.bincount(row).argmax() for row in stacked])  # the reference's rule
    np.testing.assert_array_equal(vote_by_label(labels), expected)

    # Ties: each row has one vote for each of two labels -> the smaller label.
    assert vote_by_label([np.array([2, 1, 7]), np.array([1, 2, 3])]).tolist() == [1, 1, 3]
    # Per-class scores are argmaxed first; (N, 1) and whole-number floats are labels.
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    votes = vote_by_label([scores, np.array([[0.0], [0.0], [1.0]]), np.array([1.0, 0.0, 0.0])])
    assert votes.tolist() == [1, 0, 1] and votes.dtype == np.int64
    assert vote_by_label([np.array([-3, 5]), np.array([-3, 4]), np.array([2, 4])]).tolist() == [
        -3,
        4,
    ]


def test_vote_by_probability_averages_scores_without_softmax() -> None:
    a = np.array([[10.0, 0.0], [0.2, 0.8]])
    b = np.array([[0.0, 3.0], [0.6, 0.4]])
    c = np.array([[0.0, 3.0], [0.5, 0.5]])
    # Mean of raw scores row 0: [3.33, 2] -> 0. The reference softmaxes each output first,
    # which gives [0.37, 0.63] -> 1 (C6); we average the scores as given.
    assert vote_by_probability([a, b, c]).tolist() == [0, 1]
    np.testing.assert_array_equal(
        vote_by_probability([a, b, c]), np.argmax(np.mean([a, b, c], axis=0), axis=1)
    )
    tie = np.array([[0.5, 0.5]])
    assert vote_by_probability([tie, tie]).tolist() == [0]


def test_averaging_rejects_bad_outputs() -> None:
    good = np.zeros((4, 2))
    cases = [
        ([], "outputs"),
        ([good, np.zeros((5, 2))], "outputs[1]"),  # row count
        ([good, np.zeros((4, 3))], "outputs[1]"),  # columns
        ([good, np.full((4, 2), np.nan)], "outputs[1]"),
        ([good, np.zeros((4, 2, 1))], "outputs[1]"),
        ([good, np.array(["a", "b", "c", "d"])], "outputs[1]"),
    ]
    for outputs, field in cases:
        with pytest.raises(InvalidArgument) as error:
            average_mean(outputs)
        assert _field(error) == field, outputs
    with pytest.raises(InvalidArgument) as error:
        vote_by_label([np.array([0, 1, 2]), np.array([0.5, 1.0, 2.0])])
    assert _field(error) == "outputs[1]"
    with pytest.raises(InvalidArgument) as error:
        vote_by_probability([good, np.zeros(4)])
    assert _field(error) == "outputs[1]"


# --- job selector ------------------------------------------------------------------------------

DIM = 6


def _distribution(member: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Member 0: a blob at -1; member 1: two blobs around +1 (overlapping tails)."""
    if member == 0:
        return rng.normal(-1.0, 0.7, size=(n, DIM))
    centres = np.array([[1.0] * DIM, [1.0, 2.0] * (DIM // 2)])
    return centres[rng.integers(0, 2, size=n)] + rng.normal(0.0, 0.6, size=(n, DIM))


@pytest.fixture(scope="module")
def market() -> list[RKMESpec]:
    rng = np.random.default_rng(10)
    return [fit_table_rkme(_distribution(i, 1500, rng), seed=0) for i in range(2)]


def _user_rows(counts: tuple[int, int], seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([_distribution(i, c, rng) for i, c in enumerate(counts)])
    return x, np.repeat([0, 1], counts)


def test_job_selector_routes_rows_to_the_member_they_were_drawn_from(
    market: list[RKMESpec],
) -> None:
    x, truth = _user_rows((100, 200))
    user = user_spec_from_rows(x)
    weights = mixture_weights(market, user)
    assert weights.sum() == pytest.approx(1.0) and np.all(weights >= 0)
    assert weights[1] == pytest.approx(2 / 3, abs=0.12)  # the user's mixture, 1/3 : 2/3

    selector = JobSelector.fit(market, user_spec=user)
    np.testing.assert_array_equal(selector.weights, weights)
    assert selector.sample_counts.tolist() == [max(5, int(1000 * w)) for w in weights]
    chosen = selector.select(x)
    assert chosen.dtype == np.int64 and chosen.shape == (300,)
    assert np.mean(chosen == truth) >= 0.95
    # Deterministic in the seed.
    np.testing.assert_array_equal(JobSelector.fit(market, user_spec=user).select(x), chosen)


def test_job_selector_works_on_reference_made_specs() -> None:
    specs = [
        RKMESpec.from_reference_json((FIXTURES / f"table_{name}_d10.rkme.json").read_text())
        for name in ("a", "c")
    ]
    rng = np.random.default_rng(3)
    data = [np.load(FIXTURES / f"table_{name}_d10.npy") for name in ("a", "c")]
    x = np.concatenate([d[rng.choice(len(d), 150, replace=False)] for d in data])
    truth = np.repeat([0, 1], 150)
    selector = JobSelector.fit(specs, herding_num=400, user_spec=user_spec_from_rows(x))
    # N(0, 1) against a wider, shifted cloud: far better than chance, not perfect.
    assert np.mean(selector.select(x) == truth) >= 0.8


def test_job_selector_predict_calls_each_member_once_and_reassembles(
    market: list[RKMESpec],
) -> None:
    x, _ = _user_rows((40, 60), seed=12)
    selector = JobSelector.fit(market, herding_num=300)
    assert selector.weights.tolist() == [0.5, 0.5]  # no user spec, no weights: equal
    chosen = selector.select(x)
    calls: list[tuple[int, np.ndarray]] = []

    def member(i: int, rows: np.ndarray) -> np.ndarray:
        calls.append((i, rows))
        return np.stack([rows.sum(axis=1) + 100 * i, np.full(len(rows), i)], axis=1)

    result = selector.predict(x, member)
    assert sorted(i for i, _ in calls) == [0, 1]
    for i, rows in calls:
        np.testing.assert_array_equal(rows, x[chosen == i])
    expected = np.stack([x.sum(axis=1) + 100 * chosen, chosen], axis=1)
    np.testing.assert_allclose(result, expected)

    with pytest.raises(LearnwareModelFailed) as failure:
        selector.predict(x, lambda i, rows: np.zeros(len(rows) - i))
    assert failure.value.learnware == "member 1"
    with pytest.raises(LearnwareModelFailed):
        selector.predict(x, lambda i, rows: np.zeros((len(rows), 1 + i)))


def test_job_selector_with_one_member_or_given_weights(market: list[RKMESpec]) -> None:
    x, _ = _user_rows((10, 10))
    single = JobSelector.fit(market[:1])
    assert single.select(x).tolist() == [0] * 20
    seen = []
    out = single.predict(x, lambda i, rows: seen.append(i) or rows[:, 0])
    assert seen == [0] and out.tolist() == x[:, 0].tolist()

    weighted = JobSelector.fit(market, weights=[3.0, 1.0], herding_num=200)
    assert weighted.weights.tolist() == [0.75, 0.25]
    assert weighted.sample_counts.tolist() == [150, 50]
    lopsided = JobSelector.fit(market, weights=[1.0, 0.0], herding_num=200)
    assert lopsided.sample_counts.tolist() == [200, 5]  # at least 5 each, as the reference


def test_job_selector_routes_on_image_specs_reduced_sets_without_herding() -> None:
    rng = np.random.default_rng(14)
    specs = [
        RKMESpec(
            z=rng.normal(3.0 * i, 1.0, size=(40, 3, 4, 4)),
            beta=np.full(40, 1 / 40),
            type=SpecType.IMAGE,
        )
        for i in range(2)
    ]
    selector = JobSelector.fit(specs, herding_num=1000)
    assert selector.sample_counts.tolist() == [40, 40]  # the reduced sets, not herded
    x = np.concatenate([rng.normal(3.0 * i, 1.0, size=(25, 3, 4, 4)) for i in range(2)])
    assert np.mean(selector.select(x) == np.repeat([0, 1], 25)) >= 0.95
    with pytest.raises(InvalidArgument) as error:
        JobSelector.fit(specs, use_herding=True)
    assert _field(error) == "use_herding"
    single = JobSelector.from_arrays(_npz_round_trip(JobSelector.fit(specs[:1]).to_arrays()))
    assert single.select(x).tolist() == [0] * 50


def test_job_selector_persists_as_arrays_and_fills_missing_values(
    market: list[RKMESpec],
) -> None:
    x, truth = _user_rows((50, 50), seed=13)
    selector = JobSelector.fit(market, herding_num=300, user_spec=user_spec_from_rows(x))
    arrays = _npz_round_trip(selector.to_arrays())
    restored = JobSelector.from_arrays(arrays)
    np.testing.assert_array_equal(restored.select(x), selector.select(x))

    holes = x.copy()
    holes[::7, 2] = np.nan
    holes[::11, 0] = np.inf
    chosen = selector.select(holes)
    assert np.isnan(holes[0, 2])  # the caller's array is not changed
    assert np.mean(chosen == truth) >= 0.9
    assert selector.select(x[:0]).shape == (0,)

    broken = dict(arrays)
    broken["coef"] = arrays["coef"][:, :1]
    with pytest.raises(InvalidArgument):
        JobSelector.from_arrays(broken)
    del broken["coef"]
    with pytest.raises(InvalidArgument):
        JobSelector.from_arrays(broken)


def test_job_selector_rejects_bad_input(market: list[RKMESpec]) -> None:
    other_dim = RKMESpec(z=np.zeros((3, DIM + 1)), beta=np.full(3, 1 / 3))
    x, _ = _user_rows((5, 5))
    cases = [
        (lambda: JobSelector.fit([]), "specs"),
        (lambda: JobSelector.fit([market[0], other_dim]), "specs[1]"),
        (lambda: JobSelector.fit([market[0], "spec"]), "specs[1]"),  # type: ignore[list-item]
        (lambda: JobSelector.fit(market, herding_num=0), "herding_num"),
        (lambda: JobSelector.fit(market, seed=-1), "seed"),
        (lambda: JobSelector.fit(market, weights=[1.0]), "weights"),
        (lambda: JobSelector.fit(market, weights=[-1.0, 2.0]), "weights"),
        (
            lambda: JobSelector.fit(market, weights=[1, 1], user_spec=user_spec_from_rows(x)),
            "weights",
        ),
        (lambda: JobSelector.fit(market, user_spec=user_spec_from_rows(x[:, :3])), "user_spec"),
        (lambda: JobSelector.fit(market, herding_num=50).select(x[:, :3]), "x"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgument) as error:
            call()
        assert _field(error) == field


# --- ensemble pruning --------------------------------------------------------------------------


def _noisy_labels(y: np.ndarray, accuracy: float, classes: int, rng: np.random.Generator):
    wrong = rng.random(y.size) > accuracy
    return np.where(wrong, (y + rng.integers(1, classes, size=y.size)) % classes, y)


def _best_subset_error(outputs: list[np.ndarray], y: np.ndarray, mode: str) -> float:
    """min over every non-empty subset of the validation error, directly."""
    best = np.inf
    for size in range(1, len(outputs) + 1):
        for subset in itertools.combinations(range(len(outputs)), size):
            chosen = [outputs[i] for i in subset]
            if mode == "classification":
                error = float(np.sum(vote_by_label(chosen) != y))
            else:
                error = float(np.mean((np.mean(chosen, axis=0) - y) ** 2))
            best = min(best, error)
    return best


def test_pruning_picks_the_good_classifiers_over_noise() -> None:
    rng = np.random.default_rng(20)
    y = rng.integers(0, 3, size=150)
    good = [_noisy_labels(y, 0.75, 3, rng) for _ in range(3)]
    noise = [rng.integers(0, 3, size=150) for _ in range(3)]
    # Members as per-class scores (argmaxed, as the reference does) and as labels.
    outputs = [np.eye(3)[good[0]] * 0.9 + 0.05, noise[0], good[1], noise[1], good[2], noise[2]]
    pruning = EnsemblePruning.fit(outputs, y, mode="classification")
    assert pruning.searched == "exhaustive"
    assert pruning.selected == [0, 2, 4]
    single_errors = [np.sum(vote_by_label([o]) != y) for o in outputs]
    assert pruning.validation_error <= min(single_errors)
    assert pruning.validation_error == _best_subset_error(outputs, y, "classification")

    # predict: the chosen members' vote; members not selected need not be run.
    fresh = [None if i not in pruning.selected else o for i, o in enumerate(outputs)]
    np.testing.assert_array_equal(
        pruning.predict(fresh), vote_by_label([outputs[i] for i in pruning.selected])
    )


def test_pruning_regression_picks_the_good_members_and_the_exact_optimum() -> None:
    rng = np.random.default_rng(21)
    y = rng.normal(size=120)
    good = [y + rng.normal(0, 0.5, size=120) for _ in range(3)]
    bad = [y + 3.0 + rng.normal(0, 0.5, size=120), rng.normal(0, 2, size=120)]
    outputs = [bad[0], good[0], good[1], bad[1], good[2]]
    pruning = EnsemblePruning.fit(outputs, y, mode="regression")
    assert pruning.selected == [1, 2, 4]
    assert pruning.validation_error == pytest.approx(_best_subset_error(outputs, y, "regression"))
    assert pruning.validation_error <= min(np.mean((o - y) ** 2) for o in outputs)
    np.testing.assert_allclose(
        pruning.predict(outputs), np.mean([outputs[i] for i in (1, 2, 4)], axis=0)
    )


def test_pruning_greedy_search_for_many_members() -> None:
    rng = np.random.default_rng(22)
    y = rng.integers(0, 2, size=200)
    good = {3: 0.8, 7: 0.78, 11: 0.8, 15: 0.77}
    outputs = [
        _noisy_labels(y, good.get(i, 0.5), 2, rng) if i in good else rng.integers(0, 2, 200)
        for i in range(16)
    ]
    pruning = EnsemblePruning.fit(outputs, y, mode="classification")
    assert pruning.searched == "greedy"
    single_errors = [np.sum(o != y) for o in outputs]
    assert pruning.validation_error <= min(single_errors)
    assert set(pruning.selected) <= set(good)
    assert pruning.validation_error == np.sum(
        vote_by_label([outputs[i] for i in pruning.selected]) != y
    )


def test_pruning_persists_as_arrays_and_rejects_bad_input() -> None:
    rng = np.random.default_rng(23)
    y = rng.integers(0, 2, size=30)
    outputs = [_noisy_labels(y, 0.8, 2, rng) for _ in range(3)]
    pruning = EnsemblePruning.fit(outputs, y, mode="classification", seed=5)
    restored = EnsemblePruning.from_arrays(_npz_round_trip(pruning.to_arrays()))
    assert restored == pruning
    np.testing.assert_array_equal(restored.predict(outputs), pruning.predict(outputs))

    def fit(outs: object, labels: object, mode: str = "classification") -> None:
        EnsemblePruning.fit(outs, labels, mode=mode)  # type: ignore[arg-type]

    nan_y = y.astype(float)
    nan_y[3] = np.nan
    cases = [
        (lambda: fit(outputs, nan_y), "y"),
        (lambda: fit(outputs, y[:-1]), "y"),
        (lambda: fit([o[:4] for o in outputs], y[:4]), "y"),  # too few labelled rows
        (lambda: fit(outputs, np.zeros(30)), "y"),  # one class
        (lambda: fit(outputs, y + 0.5), "y"),  # not whole-number labels
        (lambda: fit([outputs[0], outputs[1][:-1]], y), "member_outputs[1]"),
        (lambda: fit([], y), "member_outputs"),
        (lambda: fit(outputs, y, mode="ranking"), "mode"),
        (lambda: fit([np.zeros((30, 2))], y.astype(float), "regression"), "member_outputs[0]"),
        (lambda: pruning.predict(outputs[:2]), "member_outputs"),
        (lambda: pruning.predict([None] * 3), f"member_outputs[{pruning.selected[0]}]"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgument) as error:
            call()
        assert _field(error) == field
    arrays = pruning.to_arrays()
    arrays["selected"] = np.array([0, 3])
    with pytest.raises(InvalidArgument):
        EnsemblePruning.from_arrays(arrays)


# --- feature augmentation ----------------------------------------------------------------------


def _augment_task(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y depends non-linearly on x; the member's output is informative but mis-scaled."""
    x = rng.normal(size=(n, 4))
    y = np.sin(2.0 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    member = 2.0 * (np.sin(2.0 * x[:, 0]) + x[:, 1] ** 2) + 1.0 + 0.1 * rng.normal(size=n)
    return x, member, y


def test_feature_augment_regression_beats_the_raw_model_and_equals_ridge_cv() -> None:
    rng = np.random.default_rng(30)
    x, member, y = _augment_task(200, rng)
    x_test, member_test, y_test = _augment_task(500, rng)
    augment = FeatureAugment.fit(x, [member], y, mode="regression")
    predicted = augment.predict(x_test, [member_test])
    raw = RidgeCV(alphas=[0.01, 0.1, 1.0, 10, 100]).fit(x, y).predict(x_test)
    augmented_mse = np.mean((predicted - y_test) ** 2)
    assert augmented_mse < 0.25 * np.mean((raw - y_test) ** 2)  # the linear model on x alone
    assert augmented_mse < 0.25 * np.mean((member_test - y_test) ** 2)  # the member alone

    # The reference's model: RidgeCV on [X | outputs].
    direct = RidgeCV(alphas=[0.01, 0.1, 1.0, 10, 100]).fit(np.column_stack([x, member]), y)
    np.testing.assert_allclose(
        predicted, direct.predict(np.column_stack([x_test, member_test])), rtol=1e-10, atol=1e-10
    )
    restored = FeatureAugment.from_arrays(_npz_round_trip(augment.to_arrays()))
    np.testing.assert_array_equal(restored.predict(x_test, [member_test]), predicted)

    two_targets = np.column_stack([y, -y])
    multi = FeatureAugment.fit(x, [member], two_targets, mode="regression")
    assert multi.predict(x_test, [member_test]).shape == (500, 2)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the reference's call, as it is written
def test_feature_augment_classification_equals_logistic_regression_cv() -> None:
    rng = np.random.default_rng(31)
    x = rng.normal(size=(150, 3))
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(int) + (x[:, 2] > 1)
    scores = np.stack([x[:, 0] + x[:, 1] ** 2, x[:, 2]], axis=1)  # an informative member
    labels = (x[:, 2] > 0).astype(int)  # a weak one, 1-D
    augment = FeatureAugment.fit(x, [scores, labels], y, mode="classification")
    with threadpoolctl.threadpool_limits(1):  # small products: threads only slow them down
        direct = LogisticRegressionCV(cv=5, max_iter=1000, random_state=0).fit(
            np.column_stack([x, scores, labels]), y
        )
        raw = LogisticRegressionCV(cv=5, max_iter=1000, random_state=0).fit(x, y)
    x_test = rng.normal(size=(300, 3))
    outs = [np.stack([x_test[:, 0] + x_test[:, 1] ** 2, x_test[:, 2]], axis=1), x_test[:, 2] > 0]
    predicted = augment.predict(x_test, outs)
    np.testing.assert_array_equal(
        predicted, direct.predict(np.column_stack([x_test, outs[0], outs[1]]))
    )
    y_test = (x_test[:, 0] + x_test[:, 1] ** 2 > 1).astype(int) + (x_test[:, 2] > 1)
    assert np.mean(predicted == y_test) > np.mean(raw.predict(x_test) == y_test) + 0.1

    binary = FeatureAugment.fit(x, [scores], (y > 0).astype(int) * 5 + 2, mode="classification")
    assert set(binary.predict(x_test, outs[:1]).tolist()) <= {2, 7}
    restored = FeatureAugment.from_arrays(_npz_round_trip(binary.to_arrays()))
    np.testing.assert_array_equal(
        restored.predict(x_test, outs[:1]), binary.predict(x_test, outs[:1])
    )


def test_feature_augment_fills_missing_values_without_touching_the_callers_array() -> None:
    rng = np.random.default_rng(32)
    x, member, y = _augment_task(100, rng)
    holes = x.copy()
    holes[::5, 1] = np.nan
    holes[3, 2] = -np.inf
    augment = FeatureAugment.fit(holes, [member], y, mode="regression")
    assert np.isnan(holes[0, 1]) and holes[3, 2] == -np.inf  # unchanged
    filled = FeatureAugment.prepare_training_input(holes)
    means = [np.mean(holes[np.isfinite(holes[:, j]), j]) for j in range(4)]
    assert filled[0, 1] == pytest.approx(means[1]) and filled[3, 2] == pytest.approx(means[2])
    np.testing.assert_allclose(augment.means, means)
    direct = RidgeCV(alphas=[0.01, 0.1, 1.0, 10, 100]).fit(np.column_stack([filled, member]), y)
    one_row = np.array([[np.nan, 0.5, 0.1, np.inf]])  # filled with the training means
    expected_row = [[means[0], 0.5, 0.1, means[3], 1.5]]
    np.testing.assert_allclose(
        augment.predict(one_row, [np.array([1.5])]), direct.predict(expected_row), rtol=1e-10
    )


def test_feature_augment_rejects_bad_input() -> None:
    rng = np.random.default_rng(33)
    x, member, y = _augment_task(30, rng)
    fitted = FeatureAugment.fit(x, [member], y, mode="regression")
    labels = (y > np.median(y)).astype(int)
    lonely = labels.copy()
    lonely[:] = 0
    lonely[0], lonely[1:] = 2, np.tile([0, 1], 15)[:29]
    all_nan = x.copy()
    all_nan[:, 2] = np.nan
    nan_y = y.copy()
    nan_y[0] = np.nan
    cases = [
        (lambda: FeatureAugment.fit(x, [member], nan_y, mode="regression"), "y"),
        (lambda: FeatureAugment.fit(x, [member], y[:-1], mode="regression"), "y"),
        (lambda: FeatureAugment.fit(x[:3], [member[:3]], y[:3], mode="regression"), "y"),
        (lambda: FeatureAugment.fit(x, [member[:-1]], y, mode="regression"), "member_outputs[0]"),
        (lambda: FeatureAugment.fit(all_nan, [member], y, mode="regression"), "x"),
        (lambda: FeatureAugment.fit(x, [member], lonely, mode="classification"), "y"),
        (lambda: FeatureAugment.fit(x, [member], y, mode="clustering"), "mode"),  # type: ignore[arg-type]
        (lambda: fitted.predict(x[:, :3], [member]), "x"),
        (lambda: fitted.predict(x, [member, member]), "member_outputs"),
        (lambda: fitted.predict(x, [np.stack([member, member], 1)]), "member_outputs[0]"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgument) as error:
            call()
        assert _field(error) == field
    arrays = fitted.to_arrays()
    arrays["coef"] = arrays["coef"][:, :2]
    with pytest.raises(InvalidArgument):
        FeatureAugment.from_arrays(arrays)
