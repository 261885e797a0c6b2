"""Table RKME fitting: reference input rules, fit quality against the reference, the beta QP,
the exact z gradient, determinism, and the reported fit."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy.optimize import minimize

from lwdock.errors import InvalidArgument
from lwdock.rkme import fit as fit_module
from lwdock.rkme.fit import (
    clean_data,
    effective_reduced_set_size,
    fit_table_rkme,
    mmd2_to_data,
    solve_simplex_qp,
)
from lwdock.rkme.kernel import gaussian_kernel
from lwdock.rkme.spec import RKMESpec, SpecType
from tests.conftest import FIXTURES

EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
QUALITY = EXPECTED["fit_quality_mmd2_to_data"]


def _data(name: str) -> np.ndarray:
    return np.load(FIXTURES / f"{name}.npy")


def _reference(name: str) -> RKMESpec:
    return RKMESpec.from_reference_json((FIXTURES / f"{name}.rkme.json").read_text())


@pytest.fixture(scope="module")
def fitted() -> dict[str, RKMESpec]:
    specs = {name: fit_table_rkme(_data(name)) for name in QUALITY}
    specs["table_nan_d10"] = fit_table_rkme(_data("table_nan_d10"), reduced_set_size=50)
    return specs


# --- quality -------------------------------------------------------------------------------


def test_exact_mmd_to_data_reproduces_the_references_fit_quality() -> None:
    for name, expected in QUALITY.items():
        assert mmd2_to_data(_reference(name), _data(name)) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_fit_is_at_least_as_close_to_the_data_as_the_references(
    fitted: dict[str, RKMESpec], name: str
) -> None:
    ours = mmd2_to_data(fitted[name], _data(name))
    assert ours <= 1.05 * QUALITY[name], (ours, QUALITY[name])


def test_fit_on_data_with_nan_and_inf_beats_the_references(fitted: dict[str, RKMESpec]) -> None:
    data = _data("table_nan_d10")
    assert not np.all(np.isfinite(data))
    reference = mmd2_to_data(_reference("table_nan_d10"), data)
    ours = fitted["table_nan_d10"]
    assert ours.z.shape == (50, 10)
    assert np.all(np.isfinite(ours.z))
    assert mmd2_to_data(ours, data) <= 1.05 * reference


def test_recorded_fit_is_the_exact_mmd_on_small_data(fitted: dict[str, RKMESpec]) -> None:
    for name in QUALITY:
        spec = fitted[name]
        assert spec.fit_mmd2 == pytest.approx(mmd2_to_data(spec, _data(name)), rel=1e-9)


def test_recorded_fit_on_large_data_is_a_close_estimate() -> None:
    rng = np.random.default_rng(3)
    n = fit_module.OPTIMISE_ROWS + 1500  # subsampled optimisation and estimated self term
    assert n > fit_module.EXACT_SELF_TERM_ROWS
    data = rng.standard_normal((n, 4)) * np.array([1.0, 2.0, 0.5, 1.0])
    spec = fit_table_rkme(data, reduced_set_size=40)
    exact = mmd2_to_data(spec, data)
    assert spec.fit_mmd2 == pytest.approx(exact, rel=0.15, abs=1e-6)


def test_optimising_z_improves_on_the_initial_centres() -> None:
    data = _data("table_b_d10")
    initial = mmd2_to_data(fit_table_rkme(data, steps=0), data)
    one = mmd2_to_data(fit_table_rkme(data, steps=1), data)
    three = mmd2_to_data(fit_table_rkme(data, steps=3), data)
    assert three < one < 0.5 * initial


# --- the spec ------------------------------------------------------------------------------


def test_fitted_spec_is_a_valid_reference_table_spec(fitted: dict[str, RKMESpec]) -> None:
    spec = fitted["table_a_d10"]
    assert spec.z.shape == (100, 10) and spec.z.dtype == np.float64
    assert spec.beta.shape == (100,)
    assert np.all(spec.beta >= 0)
    assert spec.beta.sum() == pytest.approx(1.0, abs=1e-12)
    assert spec.gamma == 0.1 and spec.num_points == 2000 and spec.type is SpecType.TABLE
    spec.validate()
    again = RKMESpec.from_reference_json(spec.to_reference_json())
    np.testing.assert_array_equal(again.z, spec.z)
    np.testing.assert_array_equal(again.beta, spec.beta)
    assert again.fit_mmd2 == spec.fit_mmd2


def test_small_data_uses_two_thirds_of_the_rows(fitted: dict[str, RKMESpec]) -> None:
    assert fitted["table_small_d3"].z.shape == (40, 3)
    assert fit_table_rkme(np.arange(20.0).reshape(5, 4)).z.shape == (3, 4)
    assert fit_table_rkme(np.ones((1, 3))).z.shape == (1, 3)


@pytest.mark.parametrize(
    ("requested", "n", "d", "expected"),
    [
        (100, 5, 10, 3),
        (100, 60, 3, 40),
        (100, 100, 3, 66),
        (100, 101, 3, 100),
        (100, 50, 20_000, 33),
        (100, 10_000, 20_000, 65),
        (100, 10_000, 13_107, 100),
        (100, 10_000, 13_108, 99),
        (100, 10_000, 200_000, 20),
    ],
)
def test_reduced_set_size_follows_the_reference(
    requested: int, n: int, d: int, expected: int
) -> None:
    assert effective_reduced_set_size(requested, n, d) == expected


def test_wide_data_caps_the_reduced_set() -> None:
    data = np.random.default_rng(0).standard_normal((50, 20_000)).astype(np.float32)
    spec = fit_table_rkme(data)
    assert spec.z.shape == (33, 20_000)
    assert np.all(np.isfinite(spec.z))


def test_samples_with_several_axes_are_flattened_and_keep_their_shape() -> None:
    flat = _data("table_small_d3")
    rng = np.random.default_rng(1)
    data = np.concatenate([flat, rng.standard_normal((60, 3))], axis=1).reshape(60, 2, 3)
    spec = fit_table_rkme(data)
    assert spec.z.shape == (40, 2, 3)
    assert spec.sample_shape == (2, 3)
    same = fit_table_rkme(data.reshape(60, 6))
    np.testing.assert_array_equal(spec.flat_z, same.z)
    np.testing.assert_array_equal(spec.beta, same.beta)


def test_integer_float32_and_constant_data_fit() -> None:
    rng = np.random.default_rng(2)
    ints = rng.integers(0, 5, size=(300, 4))
    assert fit_table_rkme(ints, reduced_set_size=20).z.shape == (20, 4)
    singles = rng.standard_normal((300, 4)).astype(np.float32)
    spec = fit_table_rkme(singles, reduced_set_size=20)
    assert spec.z.dtype == np.float64
    constant = fit_table_rkme(np.full((200, 3), 7.0), reduced_set_size=10)
    np.testing.assert_allclose(constant.z, 7.0)
    assert constant.fit_mmd2 == pytest.approx(0.0, abs=1e-8)


def test_fit_is_deterministic_in_the_seed() -> None:
    data = _data("table_c_d10")
    first = fit_table_rkme(data, seed=7)
    second = fit_table_rkme(data.copy(), seed=7)
    np.testing.assert_array_equal(first.z, second.z)
    np.testing.assert_array_equal(first.beta, second.beta)
    assert first.fit_mmd2 == second.fit_mmd2
    other = fit_table_rkme(data, seed=8)
    assert not np.array_equal(first.z, other.z)


def test_parallel_tiles_give_the_same_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiles are reduced in order, so scheduling cannot change a result; only BLAS's own
    # thread count may move the last bits (the forced pool below does not limit BLAS).
    data = _data("table_a_d10")
    serial = fit_table_rkme(data, steps=1)
    pool = fit_module._TilePool()
    pool._executor = ThreadPoolExecutor(2)
    pool._depth = 1  # always on, whether or not BLAS can be limited
    monkeypatch.setattr(fit_module, "_POOL", pool)
    try:
        parallel = fit_table_rkme(data, steps=1)
        exact = mmd2_to_data(parallel, data)
    finally:
        pool._executor.shutdown()
    np.testing.assert_allclose(serial.z, parallel.z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(serial.beta, parallel.beta, rtol=1e-9, atol=1e-12)
    assert exact == pytest.approx(parallel.fit_mmd2, rel=1e-9)


def test_unconstrained_beta_is_the_references_ridge_solution() -> None:
    data = _data("table_small_d3")
    spec = fit_table_rkme(data, nonnegative_beta=False)
    z = spec.flat_z
    kzz = gaussian_kernel(z, z, 0.1)
    c = gaussian_kernel(z, data, 0.1).mean(axis=1)
    expected = np.linalg.solve(0.5 * (kzz + kzz.T) + 1e-5 * np.eye(z.shape[0]), c)
    np.testing.assert_allclose(spec.beta, expected, rtol=1e-6, atol=1e-9)
    assert mmd2_to_data(spec, data) == pytest.approx(spec.fit_mmd2, rel=1e-6, abs=1e-12)


def test_progress_reports_stages_in_order() -> None:
    seen: list[tuple[str, float]] = []
    fit_table_rkme(_data("table_small_d3"), progress=lambda s, f: seen.append((s, f)))
    stages = [stage for stage, _ in seen]
    assert stages[0] == "cleaning" and stages[-1] == "done"
    assert {"initialising", "optimising", "finalising"} <= set(stages)
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0


# --- input rules ---------------------------------------------------------------------------


def test_cleaning_replaces_inf_and_nan_by_the_column_mean_without_touching_the_input() -> None:
    data = np.array([[1.0, np.nan], [np.inf, 4.0], [3.0, -np.inf], [5.0, 2.0]])
    original = data.copy()
    cleaned, shape = clean_data(data)
    np.testing.assert_array_equal(data, original)
    assert shape == (2,)
    np.testing.assert_allclose(cleaned, [[1.0, 3.0], [3.0, 4.0], [3.0, 3.0], [5.0, 2.0]])
    finite = np.ones((3, 2), dtype=np.float32)
    assert np.shares_memory(clean_data(finite)[0], finite)  # no copy when nothing to clean


def _violation_fields(caught: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in caught.value.violations]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (np.arange(5.0), "shape"),
        (np.float64(3.0), "shape"),
        (np.zeros((0, 4)), "empty"),
        (np.zeros((4, 0)), "empty"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.ones((3, 2), dtype=np.complex128), "dtype"),
        (np.array([[1.0, None], [2.0, "x"]], dtype=object), "numeric"),
        ([[1.0, 2.0], [3.0]], "numeric"),
        (np.array([[1.0, np.nan, 2.0], [3.0, np.inf, 4.0]]), "column(s) 1"),
        (np.array([[1e200, 0.0], [0.0, 1.0]]), "too large"),
    ],
)
def test_bad_data_is_an_invalid_argument_naming_the_problem(data: object, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        fit_table_rkme(data)
    assert _violation_fields(caught) == ["data"]
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"reduced_set_size": 0}, "reduced_set_size"),
        ({"reduced_set_size": 2.5}, "reduced_set_size"),
        ({"steps": -1}, "steps"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_configuration_is_an_invalid_argument(options: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        fit_table_rkme(np.ones((10, 2)), **options)
    assert _violation_fields(caught) == [field]


def test_mmd2_to_data_rejects_rows_of_another_width() -> None:
    with pytest.raises(InvalidArgument):
        mmd2_to_data(_reference("table_a_d10"), np.ones((5, 3)))


# --- the beta QP and the z gradient --------------------------------------------------------


def _qp_objective(kernel: np.ndarray, c: np.ndarray, beta: np.ndarray, ridge: float) -> float:
    return float(0.5 * beta @ (kernel + ridge * np.eye(c.size)) @ beta - c @ beta)


@pytest.mark.parametrize("seed", range(4))
def test_simplex_qp_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((40, 3)) * (0.5 + seed)
    data = rng.standard_normal((300, 3)) * 1.5 + 0.5
    kernel = gaussian_kernel(z, z, 0.1)
    c = gaussian_kernel(z, data, 0.1).mean(axis=1)
    beta = solve_simplex_qp(kernel, c)
    assert np.all(beta >= 0) and beta.sum() == pytest.approx(1.0, abs=1e-12)
    # KKT: the gradient is equal on the support and no smaller off it.
    gradient = (0.5 * (kernel + kernel.T) + 1e-9 * np.eye(40)) @ beta - c
    support = beta > 0
    level = gradient[support].mean()
    np.testing.assert_allclose(gradient[support], level, atol=1e-10)
    assert np.all(gradient[~support] >= level - 1e-10)
    scipy_result = minimize(
        lambda b: _qp_objective(kernel, c, b, 1e-9),
        np.full(40, 1 / 40),
        jac=lambda b: (kernel + 1e-9 * np.eye(40)) @ b - c,
        bounds=[(0, None)] * 40,
        constraints=[{"type": "eq", "fun": lambda b: b.sum() - 1.0}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    ours = _qp_objective(kernel, c, beta, 1e-9)
    assert ours <= _qp_objective(kernel, c, scipy_result.x, 1e-9) + 1e-14
    warm = solve_simplex_qp(kernel, c, start=rng.random(40))
    np.testing.assert_allclose(warm, beta, atol=1e-9)


def test_simplex_qp_handles_degenerate_kernels() -> None:
    assert solve_simplex_qp(np.ones((1, 1)), np.array([0.3])).tolist() == [1.0]
    duplicated = np.ones((4, 4))  # four identical points
    beta = solve_simplex_qp(duplicated, np.full(4, 0.5))
    assert beta.sum() == pytest.approx(1.0) and np.all(beta >= 0)
    identity = solve_simplex_qp(np.eye(3), np.zeros(3))  # far-apart points, far-away data
    np.testing.assert_allclose(identity, 1 / 3)
    vertex = solve_simplex_qp(np.eye(3), np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(vertex, [1.0, 0.0, 0.0], atol=1e-8)  # the ridge's share


def test_z_gradient_is_the_exact_gradient_of_the_profile_objective() -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal((200, 3))
    rows = fit_module._Rows.of(data)
    z = rng.standard_normal((8, 3))
    for nonnegative in (True, False):
        value, gradient, _ = fit_module._profile_objective(z, rows, 0.3, nonnegative, None)
        step = 1e-6
        numeric = np.zeros_like(z)
        for index in np.ndindex(*z.shape):
            shifted = z.copy()
            shifted[index] += step
            up = fit_module._profile_objective(shifted, rows, 0.3, nonnegative, None)[0]
            shifted[index] -= 2 * step
            down = fit_module._profile_objective(shifted, rows, 0.3, nonnegative, None)[0]
            numeric[index] = (up - down) / (2 * step)
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-9)
        assert np.isfinite(value)
