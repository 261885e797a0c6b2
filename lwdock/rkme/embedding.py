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
_ROWS_PER_CHUNK = 4096


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


def _embed(z: np.ndarray, beta: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    mu = np.zeros(weights.shape[0])
    for start in range(0, z.shape[0], _ROWS_PER_CHUNK):
        phases = z[start : start + _ROWS_PER_CHUNK] @ weights.T
        phases += offsets
        np.cos(phases, out=phases)
        mu += beta[start : start + _ROWS_PER_CHUNK] @ phases
    return mu * math.sqrt(2.0 / weights.shape[0])


def rff_embedding(spec: RKMESpec, dimension: int = DEFAULT_DIMENSION, seed: int = 0) -> np.ndarray:
    """mu(spec) as float32 [dimension]; deterministic in (spec, dimension, seed)."""
    weights, offsets = rff_features(seed, spec.flat_z.shape[1], spec.gamma, dimension)
    z = spec.flat_z.astype(np.float64, copy=False)
    return _embed(z, spec.beta.astype(np.float64, copy=False), weights, offsets).astype(np.float32)


def rff_embeddings(
    specs: Sequence[RKMESpec], dimension: int = DEFAULT_DIMENSION, seed: int = 0
) -> np.ndarray:
    """rff_embedding of each spec, float32 [len(specs), dimension].

    Specs sharing (d, gamma) are embedded together, so the reduced sets of many small specs
    go through one matrix product. Rows of specs with different (d, gamma) live in different
    feature spaces and must not be compared.
    """
    _check(dimension, 1.0, seed)
    out = np.empty((len(specs), dimension), dtype=np.float32)
    groups: dict[tuple[int, float], list[int]] = {}
    for position, spec in enumerate(specs):
        groups.setdefault((spec.flat_z.shape[1], float(spec.gamma)), []).append(position)
    for (d, gamma), members in groups.items():
        weights, offsets = rff_features(seed, d, gamma, dimension)
        z = np.concatenate([specs[i].flat_z for i in members]).astype(np.float64, copy=False)
        sizes = [specs[i].flat_z.shape[0] for i in members]
        owner = np.repeat(np.arange(len(members)), sizes)
        beta = np.concatenate([specs[i].beta for i in members]).astype(np.float64, copy=False)
        mu = np.zeros((len(members), dimension))
        for start in range(0, z.shape[0], _ROWS_PER_CHUNK):
            window = slice(start, start + _ROWS_PER_CHUNK)
            phases = z[window] @ weights.T
            phases += offsets
            np.cos(phases, out=phases)
            phases *= beta[window, None]
            rows_owner = owner[window]
            starts = np.flatnonzero(np.r_[True, rows_owner[1:] != rows_owner[:-1]])
            mu[rows_owner[starts]] += np.add.reduceat(phases, starts, axis=0)
        out[members] = (mu * math.sqrt(2.0 / dimension)).astype(np.float32)
    return out
