"""Greedy mixture search, as the reference's `greedy` method (REFERENCE.md §7.5).

Over candidates l_1..l_n with cross terms C_i = <u, l_i> and Gram matrix K_ij = <l_i, l_j>:
at each step try the unused candidates c, solve the simplex QP
min_w 1/2 w^T K_S w - C_S^T w (w >= 0, sum w = 1) on S + {c}, whose squared MMD is
<u, u> + w^T K_S w - 2 C_S^T w; take the best c and accept it when it lowers the mixture's
squared MMD to at most 95% of the current one (the first, the nearest single, is always
accepted); stop otherwise.

Exact cross terms and Gram entries are computed only where a QP needs them, and kept. With a
`Screen` (embeddings of the user and of the candidates), each step first solves every
candidate's QP on the embeddings' inner products and then exactly: the `verify` best of
those, and every other candidate whose estimate is within the screening's error (measured
on the ones solved exactly: SCREEN_MARGIN times the largest difference) of the best exact
value, or of the acceptance bound while that is lower. The accepted member, its weights and
the mixture's squared MMD are always exact. Without a screen, every candidate is solved
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lwdock.rkme.fit import QP_RIDGE, solve_simplex_qp

DECAY_RATE = 0.95
DEFAULT_MAX_MIXTURE = 5
VERIFY = 3  # candidates per step solved exactly after screening, at least
SCREEN_MARGIN = 1.0  # ... and those within this many times the screening's error of the best


@dataclass(frozen=True)
class Mixture:
    members: tuple[int, ...]  # positions in the candidate list, in the order accepted
    weights: tuple[float, ...]
    mmd2: float
    cross: float  # <u, mixture>
    self_product: float  # <mixture, mixture>


@dataclass(frozen=True)
class Screen:
    """Embeddings whose inner products estimate the kernel's: the candidates' [n, D] and
    the user's [D]."""

    vectors: np.ndarray
    user: np.ndarray


def _evaluate(
    members: list[int],
    gram_matrix: np.ndarray,
    cross: np.ndarray,
    user_self: float,
    candidates: np.ndarray,
    solve_constrained: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each candidate's mixture with the members: (squared MMD, inf where pruned; weights
    [n, k + 1], the members' first; a ranking key, the squared MMD or, where pruned, its
    lower bound).

    The equality-constrained QP (sum w = 1, no signs) of every candidate is solved in closed
    form at once: the members' block A = K_S + ridge I is inverted once and each candidate's
    bordered matrix [[A, g], [g^T, h]] through its Schur complement h - g^T A^-1 g. Where a
    weight comes out <= 0 the simplex QP is solved exactly (active set) for that candidate.
    Without the sign constraints the QP's value is a lower bound: a candidate whose bound
    cannot beat the best exact value needs no exact solve; those are solved in the order of
    their bounds, the best value so far pruning the rest. Without `solve_constrained`
    (screening) none is solved: such a candidate's key is its lower bound."""
    k = len(members)
    n = candidates.size
    diagonal = gram_matrix[candidates, candidates]
    if k == 0:
        mmd2 = user_self + diagonal - 2.0 * cross[candidates]
        return mmd2, np.ones((n, 1)), mmd2
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
    if not solve_constrained:
        mmd2[constrained] = np.inf
        return mmd2, weights, key
    best = float(mmd2[free].min()) if free.any() else np.inf
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
    return mmd2, weights, key


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
    screen: Screen | None = None,
    verify: int = VERIFY,
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
    exact_gram = np.full((count, count), np.nan)
    exact_gram[np.diag_indices(count)] = diagonal

    def need(members: list[int], positions: np.ndarray) -> None:
        missing = positions[np.isnan(exact_cross[positions])]
        if missing.size:
            exact_cross[missing] = cross(missing)
        if not members:
            return
        rows = np.asarray(members)
        unknown = np.isnan(exact_gram[np.ix_(rows, positions)])
        if unknown.any():  # one call for every member's missing entries
            rows, columns = rows[unknown.any(axis=1)], positions[unknown.any(axis=0)]
            values = np.asarray(gram_entries(rows, columns), dtype=np.float64)
            block = exact_gram[np.ix_(rows, columns)]
            fill = np.isnan(block)
            block[fill] = values[fill]
            exact_gram[np.ix_(rows, columns)] = block
            exact_gram[np.ix_(columns, rows)] = block.T

    if screen is not None:
        vectors = np.asarray(screen.vectors, dtype=np.float64)
        user = np.asarray(screen.user, dtype=np.float64)
        estimated_gram, estimated_cross = vectors @ vectors.T, vectors @ user

    members: list[int] = []
    weights = np.ones(0)
    best_mmd2: float | None = None
    used = np.zeros(count, dtype=bool)
    for _ in range(min(max_members, count)):
        unused = np.flatnonzero(~used)
        tried = unused
        estimate: np.ndarray | None = None
        if screen is not None and unused.size > verify:
            if not members and not np.isnan(exact_cross[unused]).all():
                tried = unused[~np.isnan(exact_cross[unused])]  # the nearest single is known
            else:
                # Exact values wherever known (the diagonal, the cross terms, the Gram
                # entries among members and those already solved); estimates elsewhere.
                gram = np.where(np.isnan(exact_gram), estimated_gram, exact_gram)
                known = np.where(np.isnan(exact_cross), estimated_cross, exact_cross)
                _, _, estimate = _evaluate(members, gram, known, user_self, unused, False)
                tried = unused[np.argsort(estimate, kind="stable")[:verify]]
        while True:
            need(members, tried)
            mmd2, solved, key = _evaluate(members, exact_gram, exact_cross, user_self, tried)
            if estimate is None:
                break
            # Candidates whose estimate is within the screening's measured error of the best
            # exact value (or, while none is accepted, of the acceptance bound) could still
            # be the step's pick: solve those exactly too.
            at = np.searchsorted(unused, tried)
            finite = np.isfinite(key) & np.isfinite(estimate[at])
            error = float(np.abs(key[finite] - estimate[at][finite]).max(initial=0.0))
            best = float(mmd2.min())
            margin = SCREEN_MARGIN * error
            untried = np.ones(unused.size, dtype=bool)
            untried[at] = False
            if best_mmd2 is not None:
                best = min(best, decay_rate * best_mmd2)
            more = unused[untried & (estimate <= best + margin)]
            if more.size == 0:
                break
            tried = np.concatenate([tried, more])
        pick = int(np.argmin(mmd2))
        if best_mmd2 is not None and mmd2[pick] > decay_rate * best_mmd2:
            break
        members.append(int(tried[pick]))
        used[tried[pick]] = True
        weights, best_mmd2 = solved[pick], float(mmd2[pick])
    assert best_mmd2 is not None
    index = np.asarray(members)
    gram = exact_gram[np.ix_(index, index)]
    return Mixture(
        members=tuple(members),
        weights=tuple(float(x) for x in weights),
        mmd2=best_mmd2,
        cross=float(exact_cross[index] @ weights),
        self_product=float(weights @ gram @ weights),
    )
