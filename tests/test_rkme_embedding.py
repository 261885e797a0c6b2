"""Random-Fourier-feature embeddings: ||mu_a - mu_b||^2 approximates MMD^2, deterministically."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lwdock.errors import InvalidArgument
from lwdock.rkme.embedding import rff_embedding, rff_embeddings, rff_features
from lwdock.rkme.kernel import inner_product, mmd2
from lwdock.rkme.spec import RKMESpec
from tests.conftest import FIXTURES

NAMES = ["table_a_d10", "table_b_d10", "table_c_d10"]


@pytest.fixture(scope="module")
def specs() -> dict[str, RKMESpec]:
    return {
        name: RKMESpec.from_reference_json((FIXTURES / f"{name}.rkme.json").read_text())
        for name in NAMES
    }


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((a.astype(np.float64) - b) ** 2))


def test_embedding_distances_approximate_mmd(specs: dict[str, RKMESpec]) -> None:
    vectors = {name: rff_embedding(spec, 4096) for name, spec in specs.items()}
    errors = []
    for left, right in itertools.combinations(NAMES, 2):
        exact = mmd2(specs[left], specs[right])
        estimate = _distance(vectors[left], vectors[right])
        assert estimate == pytest.approx(exact, rel=0.10), (left, right)
        errors.append(abs(estimate / exact - 1))
    assert np.mean(errors) < 0.05
    for name in NAMES:  # ||mu||^2 approximates <Phi, Phi>
        norm = _distance(vectors[name], np.zeros(4096))
        assert norm == pytest.approx(inner_product(specs[name], specs[name]), rel=0.10)


def test_embedding_distances_rank_like_mmd(specs: dict[str, RKMESpec]) -> None:
    vectors = {name: rff_embedding(spec, 4096) for name, spec in specs.items()}
    for query in NAMES:
        others = [name for name in NAMES if name != query]
        by_mmd = sorted(others, key=lambda name: mmd2(specs[query], specs[name]))
        by_rff = sorted(others, key=lambda name: _distance(vectors[query], vectors[name]))
        assert by_rff == by_mmd, query


def test_embedding_is_deterministic_in_the_seed(specs: dict[str, RKMESpec]) -> None:
    spec = specs["table_a_d10"]
    first = rff_embedding(spec, 512, seed=5)
    assert first.shape == (512,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, rff_embedding(spec, 512, seed=5))
    assert not np.array_equal(first, rff_embedding(spec, 512, seed=6))
    weights, offsets = rff_features(5, 10, 0.1, 512)
    assert rff_features(5, 10, 0.1, 512)[0] is weights  # cached
    assert weights.shape == (512, 10) and offsets.shape == (512,)
    assert np.all((offsets >= 0) & (offsets < 2 * np.pi))
    assert np.std(weights) == pytest.approx(np.sqrt(0.2), rel=0.05)  # N(0, 2 gamma)
    assert not weights.flags.writeable


def test_batched_embeddings_match_single_ones(specs: dict[str, RKMESpec]) -> None:
    rng = np.random.default_rng(0)
    mixed = [
        *specs.values(),
        RKMESpec(z=rng.standard_normal((5, 3)), beta=np.full(5, 0.2)),
        RKMESpec(z=rng.standard_normal((4, 10)), beta=np.full(4, 0.25), gamma=0.5),
    ]
    batch = rff_embeddings(mixed, 256, seed=2)
    assert batch.shape == (5, 256) and batch.dtype == np.float32
    for row, spec in zip(batch, mixed, strict=True):
        np.testing.assert_allclose(row, rff_embedding(spec, 256, seed=2), atol=1e-6)
    assert rff_embeddings([], 64).shape == (0, 64)


@pytest.mark.parametrize(
    ("options", "field"), [({"dimension": 0}, "dimension"), ({"seed": -1}, "seed")]
)
def test_bad_options_are_invalid_arguments(
    specs: dict[str, RKMESpec], options: dict, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        rff_embedding(specs["table_a_d10"], **options)
    assert caught.value.violations[0].field == field
