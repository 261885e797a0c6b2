"""Fitting a table RKME specification to data (REFERENCE.md §3.2-3.3), fast and tiled.

The model is Phi = sum_i beta_i k(z_i, .) with k(a, b) = exp(-gamma ||a - b||^2), fitted to the
empirical mean embedding mu_X = (1/N) sum_n k(x_n, .) by minimising

    J(z, beta) = beta^T K_zz beta - 2 beta^T c,    c_i = (1/N) sum_n k(z_i, x_n),

which is ||Phi - mu_X||^2 (the squared MMD) up to the constant ||mu_X||^2.

Differences from the reference (same input rules, same JSON, better fit, much faster):

- Initialisation: k-means++ seeding and a few Lloyd iterations on a fixed random subsample
  (the reference runs 100 full-batch k-means iterations on all rows from random starts).
- z-step: the *exact* gradient of J (the reference halves the repulsion term) of the
  profile objective V(z) = min_beta J(z, beta) (by Danskin's theorem the gradient of V is the
  partial gradient of J at the optimal beta), minimised with L-BFGS, whose line search makes
  every iteration decrease V; `steps` x `ITERATIONS_PER_STEP` iterations (3 x 3 by default).
- The beta QP (min 1/2 b^T K b - c^T b, sum b = 1, b >= 0) is solved exactly by a primal
  active-set method (`solve_simplex_qp`), warm-started from the previous beta.
- Every kernel between the reduced set and the data is computed in float64 tiles of
  `TILE_ENTRIES` entries; nothing of size N x N, or K x N for large N, is materialised. Above
  `OPTIMISE_ROWS` rows the z optimisation works on a fixed random subsample of that many rows;
  the final beta and the reported fit are computed on all rows.
- The fitted spec records `fit_mmd2`, the squared MMD between Phi and mu_X (see
  `_data_self_term` for how the constant ||mu_X||^2 is obtained on large data).
- With threadpoolctl installed, tiles run on all cores with BLAS single-threaded (`_TilePool`);
  without it they run serially, which is 2-3x slower on a 2-core machine.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import scipy.linalg
from scipy.optimize import minimize

from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.rkme.device import TorchTiles, resolve_device, tile_backend
from lwdock.rkme.kernel import gaussian_kernel
from lwdock.rkme.spec import RKMESpec, SpecType

try:  # optional: lets kernel tiles use every core (see _TilePool)
    import threadpoolctl as _threadpoolctl
except ImportError:  # pragma: no cover - depends on the environment
    _threadpoolctl = None

T = TypeVar("T")

Progress = Callable[[str, float], None]
"""`progress(stage, fraction)`: stage is one of "cleaning", "initialising", "optimising",
"finalising", "done"; fraction is the overall fraction of the work done, in [0, 1]."""

MAX_REDUCED_SET_ENTRIES = 1_310_720  # the reference's C.max_reduced_set_size (K * D cap)
QP_RIDGE = 1e-9  # added to K_zz's diagonal in the nonnegative QP, for conditioning
UNCONSTRAINED_RIDGE = 1e-5  # the reference's ridge for nonnegative_beta=False
TILE_ENTRIES = 1 << 18  # kernel entries per tile (2 MiB of float64)
INIT_ROWS = 1024  # rows of the subsample that k-means++ and Lloyd's iterations see
LLOYD_ITERATIONS = 6
OPTIMISE_ROWS = 1024  # above this many rows, z is optimised on a fixed subsample
ITERATIONS_PER_STEP = 3  # L-BFGS iterations per `steps`
EXACT_SELF_TERM_ROWS = 2048  # up to this many rows ||mu_X||^2 is the exact N x N mean
SELF_TERM_SAMPLE_ROWS = 512  # above it, an unbiased control-variate estimate on this many
NYSTROM_RIDGE = 1e-6  # (K_zz + eps I)^-1 in that estimate's control variate


# --- input ---------------------------------------------------------------------------------


def _violation(field_path: str, description: str) -> InvalidArgument:
    return InvalidArgument.for_field(field_path, description)


def _as_float_rows(data: object, field_path: str) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """Data as a C-contiguous [N, D] float32/float64 array (rows flattened), the sample shape,
    and whether that array is a copy (False: it may be the caller's memory)."""
    try:
        original = np.asarray(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise _violation(field_path, f"not a numeric array: {exc}") from None
    array = original
    kind = array.dtype.kind
    if kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise _violation(field_path, f"not a numeric array: {exc}") from None
    elif kind in "biu":
        array = array.astype(np.float64)
    elif kind == "f":
        if array.dtype.itemsize < 4:
            array = array.astype(np.float32)
        elif array.dtype.itemsize > 8:
            array = array.astype(np.float64)
    else:
        raise _violation(field_path, f"needs a real numeric dtype, got {array.dtype}")
    if array.ndim < 2:
        raise _violation(
            field_path, f"needs shape [n, d, ...] (one row per sample), got {array.shape}"
        )
    n = array.shape[0]
    sample_shape = tuple(int(s) for s in array.shape[1:])
    if n == 0 or math.prod(sample_shape) == 0:
        raise _violation(field_path, f"is empty (shape {array.shape})")
    array = np.ascontiguousarray(array.reshape(n, -1))
    return array, sample_shape, not np.may_share_memory(array, original)


def _tile_rows(columns: int) -> int:
    return max(1, TILE_ENTRIES // max(1, columns))


def clean_data(data: object, field_path: str = "data") -> tuple[np.ndarray, tuple[int, ...]]:
    """The reference's cleaning: rows flattened, +-inf -> NaN, NaN -> the column's mean.

    Returns a C-contiguous [N, D] float32 or float64 array (the caller's array itself when it
    already is one and holds no NaN or inf; never modified in place) and the sample shape.
    Raises InvalidArgument for a non-numeric, <2-D or empty array, or an all-NaN column.
    """
    rows, sample_shape, copied = _as_float_rows(data, field_path)
    n, d = rows.shape
    step = _tile_rows(d)
    if all(np.isfinite(rows[s : s + step]).all() for s in range(0, n, step)):
        return rows, sample_shape
    if not copied:
        rows = rows.copy()
    sums = np.zeros(d)
    counts = np.zeros(d)
    for start in range(0, n, step):
        tile = rows[start : start + step]
        finite = np.isfinite(tile)
        sums += np.where(finite, tile, 0.0).sum(axis=0, dtype=np.float64)
        counts += finite.sum(axis=0)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        shown = ", ".join(str(int(i)) for i in empty[:10]) + (" ..." if empty.size > 10 else "")
        raise _violation(field_path, f"column(s) {shown} hold no finite value")
    means = (sums / np.maximum(counts, 1)).astype(rows.dtype)
    for start in range(0, n, step):
        tile = rows[start : start + step]
        np.copyto(tile, np.broadcast_to(means, tile.shape), where=~np.isfinite(tile))
    return rows, sample_shape


def effective_reduced_set_size(requested: int, n: int, d: int) -> int:
    """The reference's K rules: the wide-data cap, then the small-N rule."""
    k = requested
    if k * d > MAX_REDUCED_SET_ENTRIES:
        k = max(20, MAX_REDUCED_SET_ENTRIES // d)
    if k >= n:
        k = max(1, (2 * n) // 3)
    return k


# --- tiled kernel sums -------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _TilePool:
    """Runs kernel tiles on worker threads while BLAS is held single-threaded.

    numpy releases the GIL in exp and matmul, so tiles scale with cores, but only when BLAS
    does not start its own threads as well (oversubscription, and OpenBLAS threads spinning on
    a busy machine, make it slower than serial). Limiting BLAS needs threadpoolctl; without it
    every tile runs serially on the calling thread, with BLAS's own threading. While any
    `session()` is open BLAS is limited to one thread process-wide (reference-counted, restored
    when the last session closes). Results do not depend on the mode: tiles are reduced in
    order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._controller: Any = None  # threadpoolctl.ThreadpoolController
        self._limiter: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._workers = min(8, _cpu_count())

    @contextmanager
    def session(self) -> Iterator[None]:
        if _threadpoolctl is None or self._workers < 2:
            yield
            return
        with self._lock:
            if self._depth == 0:
                if self._controller is None:
                    self._controller = _threadpoolctl.ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._workers, "lwdock-rkme-tile")
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None

    def map(self, function: Callable[[int], T], count: int) -> list[T]:
        """[function(0), ..., function(count - 1)], in order."""
        executor = self._executor
        if count <= 1 or executor is None or self._depth == 0:
            return [function(i) for i in range(count)]
        return list(executor.map(function, range(count)))


_POOL = _TilePool()


@dataclass(frozen=True)
class _Rows:
    """Cleaned data rows [N, D] (float32 or float64) with their float64 squared norms."""

    x: np.ndarray
    sqnorm: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> _Rows:
        step = _tile_rows(x.shape[1])

        def norms(i: int) -> np.ndarray:
            tile = x[i * step : (i + 1) * step].astype(np.float64, copy=False)
            with np.errstate(over="ignore"):  # too-large values are reported by the caller
                return np.einsum("ij,ij->i", tile, tile)

        parts = _POOL.map(norms, -(-x.shape[0] // step))
        return cls(x, np.concatenate(parts) if parts else np.empty(0))

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> _Rows:
        return _Rows(self.x[index].astype(np.float64), self.sqnorm[index])

    def tile_count(self, rows_per_tile: int) -> int:
        return -(-self.n // rows_per_tile)

    def tile(self, i: int, rows_per_tile: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [i * rows_per_tile, (i + 1) * rows_per_tile) in float64, with their norms."""
        window = slice(i * rows_per_tile, (i + 1) * rows_per_tile)
        return self.x[window].astype(np.float64, copy=False), self.sqnorm[window]


def _left_factor(z: np.ndarray, gamma: float) -> np.ndarray:
    """[2 gamma z, -gamma ||z||^2, -gamma]: times [x, 1, ||x||^2]^T gives -gamma ||z - x||^2."""
    zsq = np.einsum("ij,ij->i", z, z)
    return np.hstack([2.0 * gamma * z, -gamma * zsq[:, None], np.full((z.shape[0], 1), -gamma)])


def _kernel_tile(left: np.ndarray, x: np.ndarray, xsq: np.ndarray) -> np.ndarray:
    """exp(-gamma ||z_i - x_m||^2) for one tile of rows, [K, m], from `_left_factor(z)`."""
    right = np.empty((x.shape[0], x.shape[1] + 2))
    right[:, :-2] = x
    right[:, -2] = 1.0
    right[:, -1] = xsq
    tile = left @ right.T
    np.exp(tile, out=tile)
    return tile


def _moments(
    z: np.ndarray, rows: _Rows, gamma: float, *, first: bool, tiles: TorchTiles | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """c_i = mean_n k(z_i, x_n) and, when `first`, s_i = mean_n k(z_i, x_n) x_n ([K, D]);
    on the GPU when `tiles` is given."""
    if tiles is not None:
        return tiles.moments(z, rows.x, gamma, first=first)
    left = _left_factor(z, gamma)
    step = _tile_rows(z.shape[0])

    def one(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        x, xsq = rows.tile(i, step)
        tile = _kernel_tile(left, x, xsq)
        return tile.sum(axis=1), (tile @ x if first else None)

    c = np.zeros(z.shape[0])
    s = np.zeros_like(z) if first else None
    for c_part, s_part in _POOL.map(one, rows.tile_count(step)):
        c += c_part
        if s is not None:
            s += s_part
    c /= rows.n
    if s is not None:
        s /= rows.n
    return c, s


def _weighted_kernel_sums(z: np.ndarray, beta: np.ndarray, rows: _Rows, gamma: float) -> np.ndarray:
    """Phi(x_n) = sum_i beta_i k(z_i, x_n) for every row, [N]."""
    left = _left_factor(z, gamma)
    step = _tile_rows(z.shape[0])

    def one(i: int) -> np.ndarray:
        return beta @ _kernel_tile(left, *rows.tile(i, step))

    return np.concatenate(_POOL.map(one, rows.tile_count(step)))


def _self_kernel_sum(rows: _Rows, gamma: float) -> float:
    """sum_{n != m} k(x_n, x_m), exactly, over symmetric tiles (N^2 / 2 kernel entries)."""
    step = max(256, math.isqrt(TILE_ENTRIES))
    blocks = rows.tile_count(step)
    pairs = [(i, j) for i in range(blocks) for j in range(i, blocks)]

    def one(p: int) -> float:
        i, j = pairs[p]
        block, _ = rows.tile(i, step)
        tile_sum = float(_kernel_tile(_left_factor(block, gamma), *rows.tile(j, step)).sum())
        return tile_sum - block.shape[0] if i == j else 2.0 * tile_sum  # k(x, x) = 1

    return math.fsum(_POOL.map(one, len(pairs)))


def _data_self_term(
    rows: _Rows, gamma: float, z: np.ndarray, c: np.ndarray, rng: np.random.Generator
) -> float:
    """||mu_X||^2 = (1/N^2) sum_{n,m} k(x_n, x_m), for the reported fit.

    Exact (N^2 / 2 kernel entries) up to `EXACT_SELF_TERM_ROWS` rows. Above, an unbiased
    estimate: the off-diagonal mean of k is that of its Nystrom approximation through the
    reduced set, k~(x, y) = k_x^T A k_y with k_x = k(z, x) and A = (K_zz + eps I)^-1, which is
    exact from c (mean_{n != m} k~ = (N c^T A c - mean_n k~(x_n, x_n)) / (N - 1), the diagonal
    mean taken on the subsample), plus the off-diagonal mean of the residual k - k~ on a fixed
    uniform subsample of `SELF_TERM_SAMPLE_ROWS` rows (a U-statistic). The residual is small
    where the reduced set covers the data, so the estimate's standard error is about 1-3 % of
    the fit on tested data (versus ~50 % for the plain U-statistic on the same subsample).
    """
    n = rows.n
    if n <= EXACT_SELF_TERM_ROWS:
        return (n + _self_kernel_sum(rows, gamma)) / (n * n)
    m = SELF_TERM_SAMPLE_ROWS
    sample = rows.take(np.sort(rng.choice(n, size=m, replace=False)))
    factor = scipy.linalg.cho_factor(_kzz(z, gamma) + NYSTROM_RIDGE * np.eye(z.shape[0]))
    k_sample = _kernel_tile(_left_factor(z, gamma), sample.x, sample.sqnorm)  # [K, m]
    whitened = scipy.linalg.solve_triangular(factor[0], k_sample, trans="T", lower=factor[1])
    diagonal = np.einsum("ij,ij->j", whitened, whitened)  # k~(x_s, x_s)
    total = whitened.sum(axis=1)
    nystrom_sample = (total @ total - diagonal.sum()) / (m * (m - 1))
    residual = _self_kernel_sum(sample, gamma) / (m * (m - 1)) - nystrom_sample
    c_white = scipy.linalg.solve_triangular(factor[0], c, trans="T", lower=factor[1])
    off_diagonal = (n * (c_white @ c_white) - diagonal.mean()) / (n - 1) + residual
    return (1.0 + (n - 1) * off_diagonal) / n


# --- the beta QP -------------------------------------------------------------------------


def _equality_qp_on(
    hessian: np.ndarray, c: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, float]:
    """min 1/2 b^T H b - c^T b s.t. sum b = 1 on the free set `index`: (b_free, lambda)."""
    h = hessian[np.ix_(index, index)]
    rhs = np.stack([c[index], np.ones(index.size)], axis=1)
    try:
        u, v = np.linalg.solve(h, rhs).T
    except np.linalg.LinAlgError:
        u, v = np.linalg.lstsq(h, rhs, rcond=None)[0].T
    lam = (u.sum() - 1.0) / v.sum()
    return u - lam * v, float(lam)


def solve_simplex_qp(
    kernel: np.ndarray,
    c: np.ndarray,
    *,
    ridge: float = QP_RIDGE,
    start: np.ndarray | None = None,
    max_iterations: int | None = None,
) -> np.ndarray:
    """argmin_b 1/2 b^T (kernel + ridge I) b - c^T b subject to sum(b) = 1, b >= 0.

    The reference's `rkme_solve_qp` (REFERENCE.md §3.3), solved exactly by a primal active-set
    method: solve the equality-constrained problem on the free set, step towards it until a
    weight hits zero (dropping it), and free the zero weight with the most negative multiplier
    until none is negative. `start` (any nonnegative vector) warm-starts it; by default it
    starts from the equality-constrained solution on all weights, clipped at 0. `kernel` must
    be symmetric positive semi-definite.
    """
    c = np.asarray(c, dtype=np.float64)
    k = c.shape[0]
    hessian = 0.5 * (kernel + kernel.T) + ridge * np.eye(k)
    if start is None:
        start = _equality_qp_on(hessian, c, np.arange(k))[0]
    beta = np.clip(np.asarray(start, dtype=np.float64), 0.0, None)
    total = beta.sum()
    if beta.shape != (k,) or not np.isfinite(total) or total <= 0:
        beta, total = np.ones(k), float(k)
    beta /= total
    free = beta > 0
    tolerance = 1e-13 * (1.0 + float(np.abs(c).max()))
    added: int | None = None
    for _ in range(max_iterations or 10 * k + 50):
        index = np.flatnonzero(free)
        target, lam = _equality_qp_on(hessian, c, index)
        if np.all(target > 0):
            beta[index] = target
            multipliers = hessian @ beta - c + lam
            multipliers[free] = np.inf
            added = int(np.argmin(multipliers))
            if multipliers[added] >= -tolerance:
                break
            free[added] = True
            continue
        current = beta[index]
        blocked = np.flatnonzero(target <= 0)
        ratios = current[blocked] / (current[blocked] - target[blocked])
        first = int(np.argmin(ratios))
        if index[blocked[first]] == added:
            break  # the weight just freed cannot grow: optimal up to rounding
        moved = current + ratios[first] * (target - current)
        moved[blocked[first]] = 0.0
        np.maximum(moved, 0.0, out=moved)
        beta[index] = moved
        free = beta > 0
        added = None
    return beta / beta.sum()


def _solve_beta(
    kzz: np.ndarray, c: np.ndarray, nonnegative: bool, start: np.ndarray | None
) -> np.ndarray:
    if nonnegative:
        return solve_simplex_qp(kzz, c, start=start)
    hessian = 0.5 * (kzz + kzz.T) + UNCONSTRAINED_RIDGE * np.eye(c.shape[0])
    return scipy.linalg.solve(hessian, c, assume_a="pos", check_finite=False)


# --- initialisation ----------------------------------------------------------------------


def _subsample(rows: _Rows, size: int, rng: np.random.Generator) -> _Rows:
    """A fixed uniform subsample (sorted, without replacement) in float64; all rows if fewer."""
    if size >= rows.n:
        return rows.take(np.arange(rows.n))
    return rows.take(np.sort(rng.choice(rows.n, size=size, replace=False)))


def _sample_rows(limit: int, d: int, k: int) -> int:
    """Rows of a float64 working subsample: `limit`, capped at 2^23 entries, at least 2 K."""
    return max(2 * k, min(limit, (1 << 23) // d))


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each centre drawn with probability ~ squared distance to the nearest."""
    sqnorm = np.einsum("ij,ij->i", x, x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(x.shape[0])]
    nearest = np.maximum(sqnorm - 2.0 * (x @ centres[0]) + centres[0] @ centres[0], 0.0)
    for i in range(1, k):
        cumulative = np.cumsum(nearest)
        if cumulative[-1] > 0:
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, x.shape[0] - 1)
        else:
            pick = int(rng.integers(x.shape[0]))
        centres[i] = x[pick]
        distance = sqnorm - 2.0 * (x @ centres[i]) + centres[i] @ centres[i]
        np.minimum(nearest, np.maximum(distance, 0.0), out=nearest)
    return centres


def _lloyd(x: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    """Full-batch Lloyd iterations; an empty cluster keeps its centre."""
    k = centres.shape[0]
    for _ in range(iterations):
        scores = x @ centres.T
        scores *= -2.0
        scores += np.einsum("ij,ij->i", centres, centres)
        labels = np.argmin(scores, axis=1)
        counts = np.bincount(labels, minlength=k)
        members = np.zeros((k, x.shape[0]))
        members[labels, np.arange(x.shape[0])] = 1.0
        sums = members @ x  # per-cluster sums as one matmul (np.add.at is ~10x slower)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def _initial_centres(rows: _Rows, k: int, rng: np.random.Generator) -> np.ndarray:
    sample = _subsample(rows, _sample_rows(INIT_ROWS, rows.x.shape[1], k), rng)
    return _lloyd(sample.x, _kmeans_plus_plus(sample.x, k, rng), LLOYD_ITERATIONS)


# --- optimisation ------------------------------------------------------------------------


def _kzz(z: np.ndarray, gamma: float) -> np.ndarray:
    kernel = gaussian_kernel(z, z, gamma)
    return 0.5 * (kernel + kernel.T)


def _profile_objective(
    z: np.ndarray,
    rows: _Rows,
    gamma: float,
    nonnegative: bool,
    beta_start: np.ndarray | None,
    tiles: TorchTiles | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """V(z) = J(z, beta*(z)) (with the solver's ridge), its gradient in z, and beta*(z).

    dJ/dz_i = -4 gamma beta_i [sum_j beta_j k_ij (z_i - z_j) - (1/N) sum_n k_in (z_i - x_n)].
    """
    c, s = _moments(z, rows, gamma, first=True, tiles=tiles)
    assert s is not None
    kzz = _kzz(z, gamma)
    beta = _solve_beta(kzz, c, nonnegative, beta_start)
    ridge = QP_RIDGE if nonnegative else UNCONSTRAINED_RIDGE
    kb = kzz @ beta
    value = float(beta @ kb + ridge * (beta @ beta) - 2.0 * (beta @ c))
    repulsion = kb[:, None] * z - kzz @ (beta[:, None] * z)
    attraction = c[:, None] * z - s
    gradient = (-4.0 * gamma) * beta[:, None] * (repulsion - attraction)
    return value, gradient, beta


def _optimise(
    z: np.ndarray,
    rows: _Rows,
    gamma: float,
    nonnegative: bool,
    iterations: int,
    on_iteration: Callable[[int], None],
    tiles: TorchTiles | None = None,
) -> np.ndarray:
    """Minimise V(z) with L-BFGS (in units of 1/sqrt(gamma)); returns the best z found."""
    scale = math.sqrt(gamma)
    shape = z.shape
    state: dict[str, np.ndarray | None] = {"beta": None}

    def value_and_gradient(u: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient, beta = _profile_objective(
            u.reshape(shape) / scale, rows, gamma, nonnegative, state["beta"], tiles
        )
        state["beta"] = beta
        return value, gradient.ravel() / scale

    done = [0]

    def callback(_: np.ndarray) -> None:
        done[0] += 1
        on_iteration(done[0])

    result = minimize(
        value_and_gradient,
        z.ravel() * scale,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": iterations, "maxfun": 2 * iterations + 10, "ftol": 1e-10, "gtol": 0},
    )
    return np.asarray(result.x).reshape(shape) / scale


# --- entry points --------------------------------------------------------------------------


def _check_config(gamma: float, reduced_set_size: int, steps: int, seed: int) -> None:
    problems: list[FieldViolation] = []
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma > 0):
        problems.append(FieldViolation("gamma", f"must be a finite number > 0, got {gamma!r}"))
    if not (isinstance(reduced_set_size, int | np.integer) and reduced_set_size >= 1):
        problems.append(
            FieldViolation("reduced_set_size", f"must be an integer >= 1, got {reduced_set_size!r}")
        )
    if not (isinstance(steps, int | np.integer) and steps >= 0):
        problems.append(FieldViolation("steps", f"must be an integer >= 0, got {steps!r}"))
    if not (isinstance(seed, int | np.integer) and seed >= 0):
        problems.append(FieldViolation("seed", f"must be an integer >= 0, got {seed!r}"))
    if problems:
        raise InvalidArgument(
            "invalid RKME configuration: "
            + "; ".join(f"{p.field}: {p.description}" for p in problems),
            problems,
        )


def fit_table_rkme(
    X: object,
    *,
    gamma: float = 0.1,
    reduced_set_size: int = 100,
    steps: int = 3,
    seed: int = 0,
    nonnegative_beta: bool = True,
    progress: Progress | None = None,
    device: str | None = "auto",
) -> RKMESpec:
    """Fit a table RKME to the rows of X (REFERENCE.md §3.2 input rules; see module docs).

    X: array-like [N, *sample_shape] of real numbers (rows are flattened); +-inf and NaN are
    replaced by their column's mean. `steps` sets the optimisation effort: `steps` rounds of
    `ITERATIONS_PER_STEP` L-BFGS iterations on z (0: k-means centres with optimal weights).
    The result is deterministic in (X, gamma, reduced_set_size, steps, seed, nonnegative_beta)
    and records `fit_mmd2`. `device` ("auto", "cpu", "cuda[:N]"; see `lwdock.rkme.device`):
    on a GPU the passes over the data run there, in float64, so the result equals the CPU's
    up to rounding. Raises InvalidArgument for bad data or configuration.
    """
    report = progress or (lambda stage, fraction: None)
    _check_config(gamma, reduced_set_size, steps, seed)
    tiles = tile_backend(resolve_device(device))
    report("cleaning", 0.0)
    x, sample_shape = clean_data(X)
    with _POOL.session():
        spec = _fit(
            x,
            sample_shape,
            float(gamma),
            int(reduced_set_size),
            int(steps),
            int(seed),
            nonnegative_beta,
            report,
            tiles,
        )
    report("done", 1.0)
    return spec


def _fit(
    x: np.ndarray,
    sample_shape: tuple[int, ...],
    gamma: float,
    reduced_set_size: int,
    steps: int,
    seed: int,
    nonnegative_beta: bool,
    report: Progress,
    tiles: TorchTiles | None = None,
) -> RKMESpec:
    rows = _Rows.of(x)
    if not np.all(np.isfinite(rows.sqnorm)):
        raise _violation("data", "holds values too large for the kernel (squares overflow)")
    n, d = x.shape
    k = effective_reduced_set_size(reduced_set_size, n, d)
    init_rng, optimise_rng, estimate_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )

    report("initialising", 0.05)
    z = _initial_centres(rows, k, init_rng)

    iterations = steps * ITERATIONS_PER_STEP
    if iterations:
        report("optimising", 0.1)
        working = rows
        if n > OPTIMISE_ROWS:
            working = _subsample(rows, _sample_rows(OPTIMISE_ROWS, d, k), optimise_rng)
        z = _optimise(
            z,
            working,
            gamma,
            nonnegative_beta,
            iterations,
            lambda i: report("optimising", min(0.9, 0.1 + 0.8 * i / iterations)),
            tiles,
        )

    report("finalising", 0.9)
    c, _ = _moments(z, rows, gamma, first=False, tiles=tiles)
    kzz = _kzz(z, gamma)
    beta = _solve_beta(kzz, c, nonnegative_beta, None)
    fit = float(beta @ kzz @ beta - 2.0 * (beta @ c))
    fit += _data_self_term(rows, gamma, z, c, estimate_rng)
    return RKMESpec(
        z=z.reshape((k, *sample_shape)),
        beta=beta,
        gamma=gamma,
        num_points=n,
        type=SpecType.TABLE,
        fit_mmd2=max(fit, 0.0),
    )


def mmd2_to_data(spec: RKMESpec, X: object) -> float:
    """Exact squared MMD between `spec` and the empirical embedding of X (cleaned as for
    fitting), with spec's gamma; N^2 / 2 kernel entries in tiles, so for tests and checks."""
    x, _ = clean_data(X)
    z = spec.flat_z
    if x.shape[1] != z.shape[1]:
        raise _violation(
            "data", f"rows have {x.shape[1]} values but the spec's samples have {z.shape[1]}"
        )
    with _POOL.session():
        rows = _Rows.of(x)
        c, _ = _moments(z, rows, spec.gamma, first=False)
        self_sum = _self_kernel_sum(rows, spec.gamma)
    value = float(spec.beta @ _kzz(z, spec.gamma) @ spec.beta - 2.0 * (spec.beta @ c))
    return value + (rows.n + self_sum) / (rows.n * rows.n)
