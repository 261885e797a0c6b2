"""The search's exact kernel sums (search_service/kernels.py) against the direct formula."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lwdock.rkme.kernel import gaussian_kernel, inner_product
from lwdock.rkme.spec import RKMESpec
from search_service.kernels import cross_matrix, gaussian_self_products, kernel_columns

GAMMA = 0.1


def _spec(rng: np.random.Generator, size: int, scale: float = 1.0) -> RKMESpec:
    z = (rng.normal(size=(size, 6)) * scale + rng.normal(size=6)).astype(np.float32)
    return RKMESpec(z=z.astype(np.float64), beta=rng.dirichlet(np.ones(size)), gamma=GAMMA)


@pytest.mark.parametrize("scale", [1.0, 40.0])  # 40: beyond the factored kernel's range
@pytest.mark.parametrize("points", [1, 37, 512, 1300])  # within, at and across blocks
def test_kernel_columns_equal_the_direct_sum(scale: float, points: int) -> None:
    rng = np.random.default_rng(points)
    zu = rng.normal(size=(50, 6)) * scale
    z = (rng.normal(size=(points, 6)) * scale).astype(np.float32)
    weights = rng.normal(size=(3, 50))
    direct = weights @ gaussian_kernel(zu, z.astype(np.float64), GAMMA)
    np.testing.assert_allclose(
        kernel_columns(zu, weights, z, GAMMA), direct, rtol=1e-12, atol=1e-300
    )
    one = kernel_columns(zu, weights[0], z, GAMMA)
    assert one.shape == (points,)
    np.testing.assert_allclose(one, direct[0], rtol=1e-12, atol=1e-300)


def test_kernel_columns_of_no_points() -> None:
    zu = np.zeros((4, 3))
    assert kernel_columns(zu, np.ones(4), np.zeros((0, 3)), GAMMA).shape == (0,)
    assert kernel_columns(zu, np.ones((2, 4)), np.zeros((0, 3)), GAMMA).shape == (2, 0)


def test_cross_matrix_equals_pairwise_inner_products() -> None:
    rng = np.random.default_rng(0)
    left = [_spec(rng, size) for size in (5, 20, 9)]
    right = [_spec(rng, size, scale) for size, scale in ((7, 1.0), (30, 2.0), (1, 1.0), (12, 0.5))]
    got = cross_matrix(
        [s.z for s in left],
        [s.beta for s in left],
        [s.z for s in right],
        [s.beta for s in right],
        GAMMA,
    )
    expected = np.array([[inner_product(a, b) for b in right] for a in left])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert cross_matrix([], [], [s.z for s in right], [s.beta for s in right], GAMMA).shape == (
        0,
        4,
    )


def test_self_products_equal_the_direct_sum_and_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(1)
    specs = [_spec(rng, size) for size in (10, 10, 25, 10, 3)]
    batched = gaussian_self_products(specs, GAMMA)
    np.testing.assert_allclose(batched, [inner_product(s, s) for s in specs], rtol=1e-12)
    alone = np.concatenate([gaussian_self_products([s], GAMMA) for s in specs])
    np.testing.assert_array_equal(batched, alone)  # a batch of changes = them one by one


def test_the_search_process_runs_each_search_on_one_thread() -> None:
    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None)\n"
        "from search_service.server import one_thread_per_search\n"
        "one_thread_per_search()\n"
        "import faiss, threadpoolctl, torch\n"
        "pools = {p['internal_api']: p['num_threads'] for p in threadpoolctl.threadpool_info()}\n"
        "print(torch.get_num_threads(), faiss.omp_get_max_threads(), sorted(set(pools.values())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "1 1 [1]"
