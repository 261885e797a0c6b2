"""Exact Gaussian-kernel sums of the search's re-ranking, float64.

The cost of a search is the exact inner products <u, l> = sum_ij beta_u[i] beta_l[j]
exp(-gamma |zu_i - z_j|^2) of the candidates it re-ranks, one exponential per pair of
reduced-set points. numpy computes the products and torch (on the CPU) the exponentials:
torch's float64 `exp` is vectorised (SLEEF, within 1 ulp) where numpy's is a scalar loop on
CPUs without AVX-512, which makes the whole sum about twice as fast there; the values agree
with the direct numpy formula to ~1e-15 relative (tests/test_search_kernels.py). The inputs
and outputs are numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lwdock.rkme.spec import RKMESpec

_BLOCK_POINTS = 512  # reduced-set points per kernel block (512 x 100 float64: 400 KiB)
_SELF_PRODUCT_POINTS = 200_000  # self inner products: kernel entries per batch / 16
# The factored kernel is used while gamma (|a|^2 + |b|^2) stays below this (e^600 is finite).
_FACTORED_LIMIT = 600.0


def kernel_columns(zu: np.ndarray, weights: np.ndarray, z: np.ndarray, gamma: float) -> np.ndarray:
    """sum_i weights[r, i] k(zu[i], z[j]) for each row j of z (Gaussian kernel), float64:
    [m, n] for weights [m, k], [n] for weights [k]. In blocks of _BLOCK_POINTS rows of z (the
    kernel block stays in cache); numpy does the products and torch only the exponentials
    (its per-call overhead is several microseconds, numpy's one)."""
    user = np.asarray(zu, dtype=np.float64)
    weights_u = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    points = np.asarray(z, dtype=np.float64)
    n = points.shape[0]
    out = np.empty((n, weights_u.shape[0]))
    if n == 0:
        return out.T if np.ndim(weights) == 2 else out[:, 0]
    user_sq = np.einsum("ij,ij->i", user, user)
    points_sq = np.einsum("ij,ij->i", points, points)
    block = np.empty((min(_BLOCK_POINTS, n), user.shape[0]))
    exponentials = torch.from_numpy(block)  # the same memory
    factored = gamma * (float(user_sq.max()) + float(points_sq.max())) < _FACTORED_LIMIT
    if factored:
        # k(a, b) = e^{-g|a|^2} e^{-g|b|^2} e^{2g a.b}: one product, one exp, no
        # squared-distance matrix; every factor stays within float64's range.
        user = user * (2.0 * gamma)
        weights_u = weights_u * np.exp(-gamma * user_sq)[None, :]
    for start in range(0, n, _BLOCK_POINTS):
        rows = points[start : start + _BLOCK_POINTS]
        count = rows.shape[0]
        kernel = block[:count]
        np.matmul(rows, user.T, out=kernel)
        if not factored:
            kernel *= -2.0
            kernel += user_sq[None, :]
            kernel += points_sq[start : start + count, None]
            kernel *= -gamma
        torch.exp(exponentials[:count], out=exponentials[:count])
        np.matmul(kernel, weights_u.T, out=out[start : start + count])
    if factored:
        out *= np.exp(-gamma * points_sq)[:, None]
    return out.T if np.ndim(weights) == 2 else out[:, 0]


def cross_matrix(
    left_points: Sequence[np.ndarray],
    left_betas: Sequence[np.ndarray],
    right_points: Sequence[np.ndarray],
    right_betas: Sequence[np.ndarray],
    gamma: float,
) -> np.ndarray:
    """<l_i, r_j> for the reduced sets (points, betas) on each side, float64 [len(left),
    len(right)], in one pass over the right side's points."""
    if not left_points or not right_points:
        return np.zeros((len(left_points), len(right_points)))
    left_sizes = [p.shape[0] for p in left_points]
    weights = np.zeros((len(left_points), sum(left_sizes)))
    start = 0
    for row, (size, beta) in enumerate(zip(left_sizes, left_betas, strict=True)):
        weights[row, start : start + size] = beta
        start += size
    right_sizes = np.fromiter((p.shape[0] for p in right_points), np.int64, len(right_points))
    left, right = np.concatenate(left_points), np.concatenate(right_points)
    columns = kernel_columns(left, weights, right, gamma)
    columns *= np.concatenate(right_betas)[None, :]
    return np.add.reduceat(columns, np.concatenate([[0], np.cumsum(right_sizes)[:-1]]), axis=1)


def gaussian_self_products(specs: Sequence[RKMESpec], gamma: float) -> np.ndarray:
    """<s, s> for each spec (Gaussian kernel), batched over specs of the same size."""
    out = np.empty(len(specs))
    by_size: dict[int, list[int]] = {}
    for i, spec in enumerate(specs):
        by_size.setdefault(spec.flat_z.shape[0], []).append(i)
    for size, members in by_size.items():
        step = max(1, _SELF_PRODUCT_POINTS // (size * size) * 16)
        for start in range(0, len(members), step):
            block = members[start : start + step]
            z = np.stack([specs[i].flat_z for i in block]).astype(np.float64)
            beta = np.stack([specs[i].beta for i in block]).astype(np.float64)
            norms = np.einsum("bkd,bkd->bk", z, z)
            sq = norms[:, :, None] - 2.0 * np.einsum("bkd,bjd->bkj", z, z) + norms[:, None, :]
            sq *= -gamma
            torch.exp(torch.from_numpy(sq), out=torch.from_numpy(sq))
            out[block] = np.einsum("bk,bkj,bj->b", beta, sq, beta)
    return out
