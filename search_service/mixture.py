"""Greedy mixture search, as the reference's `greedy` method (REFERENCE.md §7.5).

Over candidates l_1..l_n with cross terms C_i = <u, l_i> and Gram matrix K_ij = <l_i, l_j>:
at each step try the unused candidates c, solve the simplex QP
min_w 1/2 w^T K_S w - C_S^T w (w >= 0, sum w = 1) on S + {c}, whose squared MMD is
<u, u> + w^T K_S w - 2 C_S^T w; take the best c and accept it when it lowers the mixture's
squared MMD to at most 95% of the current one (the first, the nearest single, is always
accepted); stop otherwise.

Every step solves every unused candidate exactly: the cross terms <u, l> come from the
ranking (computed there), and each accepted member's Gram row over the candidates left is
computed once, in one call. The step's QPs are solved together in closed form; a candidate
whose weight comes out <= 0 is decided by its KKT condition at weight 0 or, where that does
not settle it and its lower bound could still win, by the exact active-set solver.

An earlier version first screened the candidates on their fine embeddings' inner products
and solved only the promising ones exactly. With the closed form and the KKT shortcut it
saved ~10 % of the Gram entries but cost more than it saved, and the embeddings' error
(~5 % of a mixture's squared MMD, as large as the 5 % acceptance step) made it miss the
exact greedy's choice on ~1 % of the benchmark's queries.
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


def _evaluate(
    members: list[int],
    gram_matrix: np.ndarray,
    cross: np.ndarray,
    user_self: float,
    candidates: np.ndarray,
    current: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's mixture with the members: (squared MMD, inf where pruned; weights
    [n, k + 1], the members' first).

    The equality-constrained QP (sum w = 1, no signs) of every candidate is solved in closed
    form at once: the members' block A = K_S + ridge I is inverted once and each candidate's
    bordered matrix [[A, g], [g^T, h]] through its Schur complement h - g^T A^-1 g. Where a
    weight comes out <= 0 the simplex QP is solved exactly (active set) for that candidate.
    Without the sign constraints the QP's value is a lower bound: a candidate whose bound
    cannot beat the best exact value needs no exact solve; those are solved in the order of
    their bounds, the best value so far pruning the rest.

    `current` = the members' optimal weights and their mixture's squared MMD. A candidate at
    weight 0 whose gradient of 1/2 w^T H w - C^T w is at least the members' (the KKT
    condition of the simplex QP on members + candidate at (current weights, 0)) cannot
    improve the mixture: its value is the current one, with no active-set solve."""
    k = len(members)
    n = candidates.size
    diagonal = gram_matrix[candidates, candidates]
    if k == 0:
        mmd2 = user_self + diagonal - 2.0 * cross[candidates]
        return mmd2, np.ones((n, 1))
    index = np.asarray(members)
    block = gram_matrix[index][:, index]
    between = gram_matrix[index][:, candidates]  # g of each candidate, [k, n]
    c_members, c_candidates = cross[index], cross[candidates]
    with np.errstate(all="ignore"):
        inverse = np.linalg.inv(block + QP_RIDGE * np.eye(k))
        projected = inverse @ between  # A^-1 g, [k, n]
        schur = diagonal + QP_RIDGE - np.einsum("kn,kn->n", between, projected)

        def solve(r_members: np.ndarray, r_candidates: np.ndarray) -> np.ndarray:
            """H^-1 [r_members; r_candidate] for every candidate, [n, k + 1]."""
            base = inverse @ r_members
            last = (r_candidates - projected.T @ r_members) / schur
            return np.concatenate([base[None, :] - projected.T * last[:, None], last[:, None]], 1)

        u = solve(c_members, c_candidates)
        v = solve(np.ones(k), np.ones(n))
        weights = u - ((u.sum(axis=1) - 1.0) / v.sum(axis=1))[:, None] * v
        mmd2 = _objective(weights, block, between, diagonal, c_members, c_candidates, user_self)
    free = np.all(weights > 0.0, axis=1) & np.isfinite(mmd2)
    key = np.where(np.isfinite(mmd2), mmd2, -np.inf)
    constrained = np.flatnonzero(~free)
    best = float(mmd2[free].min()) if free.any() else np.inf
    if current is not None and constrained.size:
        current_weights, current_mmd2 = current
        positive = current_weights > 0.0
        members_gradient = block @ current_weights + QP_RIDGE * current_weights - c_members
        level = float(members_gradient[positive].max())
        gradient = current_weights @ between[:, constrained] - c_candidates[constrained]
        stays = constrained[gradient > level]
        weights[stays] = np.append(current_weights, 0.0)
        mmd2[stays] = current_mmd2
        if stays.size:
            best = min(best, current_mmd2)
        constrained = constrained[gradient <= level]
    for i in constrained[np.argsort(key[constrained], kind="stable")].tolist():
        if key[i] >= best:
            mmd2[i] = np.inf
            continue
        gram = np.empty((k + 1, k + 1))
        gram[:k, :k] = block
        gram[:k, k] = gram[k, :k] = between[:, i]
        gram[k, k] = diagonal[i]
        c = np.append(c_members, c_candidates[i])
        weights[i] = solve_simplex_qp(gram, c)
        mmd2[i] = key[i] = user_self + weights[i] @ gram @ weights[i] - 2.0 * c @ weights[i]
        best = min(best, float(mmd2[i]))
    return mmd2, weights


def _objective(
    weights: np.ndarray,
    block: np.ndarray,
    between: np.ndarray,
    diagonal: np.ndarray,
    c_members: np.ndarray,
    c_candidates: np.ndarray,
    user_self: float,
) -> np.ndarray:
    """<u,u> + w^T K w - 2 c^T w for each candidate's weights (members first)."""
    w_members, w_last = weights[:, :-1], weights[:, -1]
    quadratic = (
        np.einsum("nk,nk->n", w_members @ block, w_members)
        + 2.0 * w_last * np.einsum("nk,kn->n", w_members, between)
        + w_last * w_last * diagonal
    )
    linear = w_members @ c_members + w_last * c_candidates
    return user_self + quadratic - 2.0 * linear


def greedy_mixture(
    diagonal: np.ndarray,
    cross: Callable[[np.ndarray], np.ndarray],
    gram_entries: Callable[[np.ndarray, np.ndarray], np.ndarray],
    user_self: float,
    max_members: int = DEFAULT_MAX_MIXTURE,
    decay_rate: float = DECAY_RATE,
    *,
    known_cross: np.ndarray | None = None,
) -> Mixture | None:
    """Over n candidates with exact <l_i, l_i> = `diagonal`: `cross(positions)` = exact
    <u, l_i>, `gram_entries(rows, positions)` = exact <l_i, l_j> for i in rows, j in
    positions [rows, positions]; `known_cross` holds the exact cross terms already computed
    (NaN elsewhere). None without candidates."""
    count = diagonal.shape[0]
    if count == 0 or max_members < 1:
        return None
    exact_cross = (
        np.full(count, np.nan) if known_cross is None else np.array(known_cross, dtype=float)
    )
    missing = np.flatnonzero(np.isnan(exact_cross))
    if missing.size:
        exact_cross[missing] = cross(missing)
    gram = np.full((count, count), np.nan)
    gram[np.diag_indices(count)] = diagonal

    members: list[int] = []
    weights = np.ones(0)
    best_mmd2: float | None = None
    used = np.zeros(count, dtype=bool)
    for _ in range(min(max_members, count)):
        unused = np.flatnonzero(~used)
        if members:  # the newest member's Gram row over the candidates left
            newest = members[-1]
            row = np.asarray(gram_entries(np.array([newest]), unused), dtype=np.float64)[0]
            gram[newest, unused] = gram[unused, newest] = row
        current = (weights, best_mmd2) if best_mmd2 is not None else None
        mmd2, solved = _evaluate(members, gram, exact_cross, user_self, unused, current=current)
        pick = int(np.argmin(mmd2))
        if best_mmd2 is not None and mmd2[pick] > decay_rate * best_mmd2:
            break
        members.append(int(unused[pick]))
        used[unused[pick]] = True
        weights, best_mmd2 = solved[pick], float(mmd2[pick])
    assert best_mmd2 is not None
    index = np.asarray(members)
    return Mixture(
        members=tuple(members),
        weights=tuple(float(x) for x in weights),
        mmd2=best_mmd2,
        cross=float(exact_cross[index] @ weights),
        self_product=float(weights @ gram[np.ix_(index, index)] @ weights),
    )
