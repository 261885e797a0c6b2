"""Kernel herding from an RKME spec: samples that track the spec, fast, never mutating it."""

from __future__ import annotations

import numpy as np
import pytest

from lwdock.errors import InvalidArgument
from lwdock.rkme.herding import candidate_noise_scale, herd, herding_weights
from lwdock.rkme.kernel import mmd2
from lwdock.rkme.spec import RKMESpec
from tests.conftest import FIXTURES


def _reference(name: str) -> RKMESpec:
    return RKMESpec.from_reference_json((FIXTURES / f"{name}.rkme.json").read_text())


def _uniform(points: np.ndarray, gamma: float = 0.1) -> RKMESpec:
    points = np.asarray(points, dtype=np.float64)
    return RKMESpec(z=points, beta=np.full(len(points), 1.0 / len(points)), gamma=gamma)


def test_herded_samples_track_the_spec_better_than_iid_draws() -> None:
    spec = _reference("table_a_d10")
    samples = herd(spec, 200)
    assert samples.shape == (200, 10) and samples.dtype == np.float32
    rng = np.random.default_rng(0)
    own_data = np.load(FIXTURES / "table_a_d10.npy")
    other_data = np.load(FIXTURES / "table_c_d10.npy")
    herded = mmd2(_uniform(samples), spec)
    iid = mmd2(_uniform(own_data[rng.choice(len(own_data), 200, replace=False)]), spec)
    wrong = mmd2(_uniform(other_data[rng.choice(len(other_data), 200, replace=False)]), spec)
    assert herded < 1e-3
    assert herded < 0.25 * iid
    assert herded < 0.01 * wrong


def test_more_samples_track_the_spec_more_closely() -> None:
    spec = _reference("table_b_d10")
    few = mmd2(_uniform(herd(spec, 20)), spec)
    many = mmd2(_uniform(herd(spec, 1000)), spec)
    assert many < few
    assert many < 5e-4


def test_herding_is_deterministic_in_the_seed() -> None:
    spec = _reference("table_small_d3")
    np.testing.assert_array_equal(herd(spec, 30, seed=3), herd(spec, 30, seed=3))
    assert not np.array_equal(herd(spec, 30, seed=3), herd(spec, 30, seed=4))


def test_negative_weights_are_clipped_on_a_copy() -> None:
    rng = np.random.default_rng(1)
    beta = np.array([0.7, -0.2, 0.5])
    spec = RKMESpec(z=rng.standard_normal((3, 2)), beta=beta.copy())
    samples = herd(spec, 10)
    np.testing.assert_array_equal(spec.beta, beta)
    np.testing.assert_allclose(herding_weights(spec), [0.7 / 1.2, 0.0, 0.5 / 1.2])
    assert samples.shape == (10, 2)
    with pytest.raises(InvalidArgument) as caught:
        herd(RKMESpec(z=np.zeros((2, 2)), beta=np.array([-1.0, 0.0])), 5)
    assert caught.value.violations[0].field == "spec.beta"


def test_samples_keep_the_specs_sample_shape() -> None:
    rng = np.random.default_rng(2)
    spec = RKMESpec(z=rng.standard_normal((6, 2, 3)), beta=np.full(6, 1 / 6))
    assert herd(spec, 7).shape == (7, 2, 3)


def test_candidate_noise_follows_the_scale_of_the_data() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((100, 2)) * np.array([1.0, 0.01])
    weights = np.full(100, 0.01)
    scale = candidate_noise_scale(z, weights, 0.1)
    assert 0.3 < scale[0] < 1.0
    assert scale[1] < 0.01
    small_bandwidth = candidate_noise_scale(z * 1000, weights, 0.1)
    assert small_bandwidth[0] == pytest.approx(1 / np.sqrt(0.2))  # capped at the kernel length
    far = _uniform(z * 1000)
    assert np.all(np.isfinite(herd(far, 5)))


@pytest.mark.parametrize("count", [0, -3, 2.5, "10", 10**6])
def test_a_bad_sample_count_is_an_invalid_argument(count: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        herd(_reference("table_small_d3"), count)  # type: ignore[arg-type]
    assert caught.value.violations[0].field == "sample_count"


def test_a_negative_seed_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        herd(_reference("table_small_d3"), 5, seed=-1)
    assert caught.value.violations[0].field == "seed"
