"""Greedy mixture search, as the reference's `greedy` method (REFERENCE.md §7.5).

Over candidates l_1..l_n with cross terms C_i = <u, l_i> and Gram matrix K_ij = <l_i, l_j>:
at each step try every unused candidate c, solve the simplex QP
min_w 1/2 w^T K_S w - C_S^T w (w >= 0, sum w = 1) on S + {c}, whose squared MMD is
<u, u> + w^T K_S w - 2 C_S^T w; take the best c and accept it when it lowers the mixture's
squared MMD to at most 95% of the current one (the first, the nearest single, is always
accepted); stop otherwise. Only the rows of accepted members are ever computed (the diagonal
<l_i, l_i> is known, entries between members are taken from the earlier member's row, and the
last possible member needs none), as the reference caches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lwdock.rkme.fit import QP_RIDGE, solve_simplex_qp

DECAY_RATE = 0.95
DEFAULT_MAX_MIXTURE = 5


@dataclass(frozen=True)
class Mixture:
    members: tuple[int, ...]  # positions in the candidate list, in the order accepted
    weights: tuple[float, ...]
    mmd2: float
    cross: float  # <u, mixture>
    self_product: float  # <mixture, mixture>


def _step(
    members: list[int],
    rows: np.ndarray,
    cross: np.ndarray,
    diagonal: np.ndarray,
    user_self: float,
    candidates: np.ndarray,
) -> tuple[float, int, np.ndarray]:
    """The best candidate to add: (its mixture's squared MMD, candidate, weights).

    The equality-constrained QPs of every candidate are solved in one batch; where a weight
    comes out <= 0 the simplex QP is solved exactly (active set) for that candidate."""
    k = len(members)
    if k == 0:
        mmd2 = user_self + diagonal[candidates] - 2.0 * cross[candidates]
        best = int(np.argmin(mmd2))
        return float(mmd2[best]), int(candidates[best]), np.ones(1)
    n = candidates.size
    index = np.asarray(members)
    gram = np.empty((n, k + 1, k + 1))
    gram[:, :k, :k] = rows[:, index]
    gram[:, :k, k] = rows[:, candidates].T
    gram[:, k, :k] = rows[:, candidates].T
    gram[:, k, k] = diagonal[candidates]
    c = np.empty((n, k + 1))
    c[:, :k] = cross[index]
    c[:, k] = cross[candidates]
    hessian = gram + QP_RIDGE * np.eye(k + 1)
    try:
        solved = np.linalg.solve(hessian, np.stack([c, np.ones_like(c)], axis=2))
        u, v = solved[..., 0], solved[..., 1]
        weights = u - ((u.sum(axis=1) - 1.0) / v.sum(axis=1))[:, None] * v
        free = np.all(weights > 0.0, axis=1) & np.all(np.isfinite(weights), axis=1)
    except np.linalg.LinAlgError:
        weights = np.zeros((n, k + 1))
        free = np.zeros(n, dtype=bool)

    def objective(w: np.ndarray) -> np.ndarray:
        return user_self + np.einsum("ni,nij,nj->n", w, gram, w) - 2.0 * np.einsum("ni,ni->n", c, w)

    mmd2 = objective(weights)
    # Without the sign constraints the QP's value is a lower bound: a candidate whose bound
    # cannot beat the best exact value needs no exact solve.
    # Those are solved in the order of their bounds, the best value so far pruning the rest.
    best = float(mmd2[free].min()) if free.any() else np.inf
    constrained = np.flatnonzero(~free)
    bounds = np.where(np.isfinite(mmd2[constrained]), mmd2[constrained], -np.inf)
    for i in constrained[np.argsort(bounds, kind="stable")].tolist():
        if np.isfinite(mmd2[i]) and mmd2[i] >= best:
            mmd2[i] = np.inf
            continue
        weights[i] = solve_simplex_qp(gram[i], c[i])
        mmd2[i] = objective(weights[i : i + 1])[0]
        best = min(best, float(mmd2[i]))
    best = int(np.argmin(mmd2))
    return float(mmd2[best]), int(candidates[best]), weights[best]


def greedy_mixture(
    cross: np.ndarray,
    diagonal: np.ndarray,
    gram_row: Callable[[int], np.ndarray],
    user_self: float,
    max_members: int = DEFAULT_MAX_MIXTURE,
    decay_rate: float = DECAY_RATE,
    gram_entries: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> Mixture | None:
    """`gram_row(i)` = <l_i, l_j> for every candidate j; `gram_entries(i, js)`, when given,
    = <l_i, l_j> for the candidates j in `js` only (what is computed). None without
    candidates."""
    if gram_entries is None:

        def gram_entries(i: int, positions: np.ndarray) -> np.ndarray:
            return np.asarray(gram_row(i), dtype=np.float64)[positions]

    count = cross.shape[0]
    if count == 0 or max_members < 1:
        return None
    members: list[int] = []
    rows = np.zeros((0, count))
    weights = np.ones(0)
    best_mmd2: float | None = None
    used = np.zeros(count, dtype=bool)
    for _ in range(min(max_members, count)):
        unused = np.flatnonzero(~used)
        mmd2, candidate, w = _step(members, rows, cross, diagonal, user_self, unused)
        if best_mmd2 is not None and mmd2 > decay_rate * best_mmd2:
            break
        # The row's entries for earlier members are theirs (symmetry); the last member's row
        # is needed only there.
        row = np.empty(count)
        if len(members) + 1 < min(max_members, count):
            positions = unused[unused != candidate]
            row[positions] = np.asarray(gram_entries(candidate, positions), dtype=np.float64)
        if members:
            row[members] = rows[:, candidate]
        row[candidate] = diagonal[candidate]
        members.append(candidate)
        used[candidate] = True
        rows = np.vstack([rows, row])
        weights, best_mmd2 = w, mmd2
    assert best_mmd2 is not None
    index = np.asarray(members)
    gram = rows[:, index]
    return Mixture(
        members=tuple(members),
        weights=tuple(float(x) for x in weights),
        mmd2=best_mmd2,
        cross=float(cross[index] @ weights),
        self_product=float(weights @ gram @ weights),
    )
