"""Kernel herding from an RKME specification (REFERENCE.md §3.6), used by the job selector.

Herding draws a pool of candidates around the reduced set and then greedily picks
s_t = argmax_x [(t + 1) Phi(x) - sum_{s < t} k(s, x)], so the picked points' uniform
embedding tracks Phi. Differences from the reference:

- the sum over picked points is kept as a running sum (one kernel row per step): O(C T D)
  for C candidates instead of O(C T^2 D);
- C = `CANDIDATES_PER_SAMPLE` T (the reference's 100 T), capped at `MAX_CANDIDATES` and at
  `MAX_CANDIDATE_ENTRIES` / D values, so T = 1,000 stays well under a second;
- candidate noise is scaled to the spec: per-dimension Silverman's-rule bandwidth of the
  beta-weighted reduced set, capped at the kernel's own length 1/sqrt(2 gamma) (the
  reference adds N(0, 0.25^2) whatever the data's scale);
- beta is never mutated: negative weights are clipped on a copy, which is renormalised.
"""

from __future__ import annotations

import math

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.fit import _POOL, _left_factor, _Rows, _weighted_kernel_sums
from lwdock.rkme.spec import RKMESpec

CANDIDATES_PER_SAMPLE = 100
MAX_CANDIDATES = 20_000
MAX_CANDIDATE_ENTRIES = 1 << 24  # candidate values held at once (128 MiB of float64)
MAX_SAMPLES = 100_000


def herding_weights(spec: RKMESpec) -> np.ndarray:
    """beta with negative entries clipped to 0, renormalised to sum 1 (a copy)."""
    weights = np.clip(np.asarray(spec.beta, dtype=np.float64), 0.0, None)
    total = weights.sum()
    if not (np.isfinite(total) and total > 0):
        raise InvalidArgument.for_field("spec.beta", "has no positive weight to herd from")
    return weights / total


def candidate_noise_scale(z: np.ndarray, weights: np.ndarray, gamma: float) -> np.ndarray:
    """Per-dimension noise std for candidates: Silverman's rule on the weighted reduced set
    (effective size 1 / sum w^2), capped at the kernel length 1/sqrt(2 gamma)."""
    mean = weights @ z
    spread = np.sqrt(np.maximum(weights @ (z - mean) ** 2, 0.0))
    d = z.shape[1]
    effective = 1.0 / float(weights @ weights)
    factor = (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0)) * effective ** (-1.0 / (d + 4.0))
    return np.minimum(spread * factor, 1.0 / math.sqrt(2.0 * gamma))


def herd(spec: RKMESpec, sample_count: int, *, seed: int = 0) -> np.ndarray:
    """`sample_count` points herded from spec, float32 [T, *spec.sample_shape].

    Deterministic in (spec, sample_count, seed). The same candidate may be picked twice.
    Raises InvalidArgument for sample_count outside [1, MAX_SAMPLES], a negative seed, an
    invalid spec, or a spec without a positive weight.
    """
    if not isinstance(sample_count, int | np.integer) or not 1 <= sample_count <= MAX_SAMPLES:
        raise InvalidArgument.for_field(
            "sample_count", f"must be an integer in [1, {MAX_SAMPLES}], got {sample_count!r}"
        )
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidArgument.for_field("seed", f"must be an integer >= 0, got {seed!r}")
    spec.validate("spec.")
    t_total = int(sample_count)
    z = spec.flat_z.astype(np.float64)
    weights = herding_weights(spec)
    gamma = float(spec.gamma)
    d = z.shape[1]
    count = max(1, min(CANDIDATES_PER_SAMPLE * t_total, MAX_CANDIDATES, MAX_CANDIDATE_ENTRIES // d))

    rng = np.random.default_rng(seed)
    centres = rng.choice(z.shape[0], size=count, p=weights)
    noise = rng.standard_normal((count, d)) * candidate_noise_scale(z, weights, gamma)
    with _POOL.session():  # BLAS single-threaded: the per-step products are small
        candidates = _Rows.of(z[centres] + noise)
        target = _weighted_kernel_sums(z, weights, candidates, gamma)  # Phi(candidate)
        picked = _herd_indices(candidates, target, gamma, t_total)
    return candidates.x[picked].astype(np.float32).reshape((t_total, *spec.sample_shape))


def _herd_indices(candidates: _Rows, target: np.ndarray, gamma: float, steps: int) -> np.ndarray:
    """Greedy herding over a fixed candidate pool: score_t = (t + 1) Phi - sum_{s<t} k(s, .),
    updated in place by one kernel row per step."""
    x = candidates.x
    augmented = np.empty((x.shape[0], x.shape[1] + 2))  # [x, 1, ||x||^2], as in _kernel_tile
    augmented[:, :-2] = x
    augmented[:, -2] = 1.0
    augmented[:, -1] = candidates.sqnorm
    score = target.copy()
    row = np.empty_like(target)
    picked = np.empty(steps, dtype=np.int64)
    for t in range(steps):
        best = int(np.argmax(score))
        picked[t] = best
        np.matmul(augmented, _left_factor(x[best : best + 1], gamma)[0], out=row)
        np.exp(row, out=row)  # k(s_t, candidate)
        score -= row
        score += target
    return picked
