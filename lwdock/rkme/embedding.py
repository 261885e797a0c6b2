"""Random-Fourier-feature embeddings of RKME specs, for L2 k-NN search (REFERENCE.md §7.7).

mu(spec) = sum_i beta_i phi(z_i), phi(x) = sqrt(2 / D) cos(W x + b), with W ~ N(0, 2 gamma I)
([D, d]) and b ~ U[0, 2 pi), so that E[phi(x) . phi(y)] = exp(-gamma ||x - y||^2) and
||mu(a) - mu(b)||^2 estimates MMD^2(a, b) with an error of order 1/sqrt(D). (seed, d, gamma,
D) define the feature map, hence an index version: vectors are comparable only when all four
match. The features are drawn from a generator seeded by (seed, d, D) and scaled by
sqrt(2 gamma), and cached (they are reused for every learnware of a partition).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.spec import RKMESpec

DEFAULT_DIMENSION = 1024
MAX_DIMENSION = 1 << 16
CACHED_FEATURE_BYTES = 1 << 26  # feature maps up to 64 MiB are cached
_ROWS_PER_CHUNK = 2048  # reduced-set points per product (phases: 8 MiB at D = 1024)


def _check(dimension: int, gamma: float, seed: int = 0) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidArgument.for_field("seed", f"must be an integer >= 0, got {seed!r}")
    if not isinstance(dimension, int | np.integer) or not 1 <= dimension <= MAX_DIMENSION:
        raise InvalidArgument.for_field(
            "dimension", f"must be an integer in [1, {MAX_DIMENSION}], got {dimension!r}"
        )
    if not (math.isfinite(gamma) and gamma > 0):
        raise InvalidArgument.for_field("gamma", f"must be > 0, got {gamma!r}")


def _draw_features(
    seed: int, d: int, gamma: float, dimension: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, d, dimension])
    weights = rng.standard_normal((dimension, d)) * math.sqrt(2.0 * gamma)
    offsets = rng.uniform(0.0, 2.0 * math.pi, size=dimension)
    weights.setflags(write=False)
    offsets.setflags(write=False)
    return weights, offsets


_cached_features = functools.lru_cache(maxsize=16)(_draw_features)


def rff_features(seed: int, d: int, gamma: float, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """(W [dimension, d], b [dimension]), float64, read-only; cached when small enough."""
    _check(dimension, gamma, seed)
    key = (int(seed), int(d), float(gamma), int(dimension))
    if dimension * d * 8 <= CACHED_FEATURE_BYTES:
        return _cached_features(*key)
    return _draw_features(*key)


def rff_embedding(spec: RKMESpec, dimension: int = DEFAULT_DIMENSION, seed: int = 0) -> np.ndarray:
    """mu(spec) as float32 [dimension]; deterministic in (spec, dimension, seed)."""
    return rff_embeddings([spec], dimension, seed)[0]


def rff_embeddings(
    specs: Sequence[RKMESpec], dimension: int = DEFAULT_DIMENSION, seed: int = 0
) -> np.ndarray:
    """rff_embedding of each spec, float32 [len(specs), dimension].

    Specs sharing (d, gamma) and a reduced-set size are embedded together: the phases
    W z + b of many specs' points are one matrix product, and each spec's weighted sum of
    their cosines one batched product. The arithmetic is float32: numpy's float64 cosine is
    scalar (about 20 ns a value here) where its float32 cosine is SIMD (about 1 ns), and the
    rounding (below 1e-5 per feature) is far below the error of the random-feature estimate
    itself (order 1/sqrt(D)). Rows of specs with different (d, gamma) live in different
    feature spaces and must not be compared.
    """
    _check(dimension, 1.0, seed)
    out = np.empty((len(specs), dimension), dtype=np.float32)
    groups: dict[tuple[int, float, int], list[int]] = {}
    for position, spec in enumerate(specs):
        z = spec.flat_z
        groups.setdefault((z.shape[1], float(spec.gamma), z.shape[0]), []).append(position)
    scale = np.float32(math.sqrt(2.0 / dimension))
    for (d, gamma, size), members in groups.items():
        weights, offsets = rff_features(seed, d, gamma, dimension)
        projection = np.ascontiguousarray(weights.T, dtype=np.float32)  # [d, D]
        shift = offsets.astype(np.float32)
        step = max(1, _ROWS_PER_CHUNK // max(size, 1))
        for start in range(0, len(members), step):
            block = members[start : start + step]
            z = np.stack([specs[i].flat_z for i in block]).astype(np.float32, copy=False)
            beta = np.stack([specs[i].beta for i in block]).astype(np.float32)
            phases = z.reshape(-1, d) @ projection
            phases += shift
            np.cos(phases, out=phases)
            mu = np.matmul(beta[:, None, :], phases.reshape(len(block), size, dimension))
            out[block] = mu[:, 0, :] * scale
    return out
