"""Greedy mixture search, as the reference's `greedy` method (REFERENCE.md §7.5).

Over candidates l_1..l_n with cross terms C_i = <u, l_i> and Gram matrix K_ij = <l_i, l_j>:
at each step try every unused candidate c, solve the simplex QP
min_w 1/2 w^T K_S w - C_S^T w (w >= 0, sum w = 1) on S + {c}, whose squared MMD is
<u, u> + w^T K_S w - 2 C_S^T w; take the best c and accept it when it lowers the mixture's
squared MMD to at most 95% of the current one (the first, the nearest single, is always
accepted); stop otherwise. Only the rows of accepted members are ever computed (the diagonal
<l_i, l_i> is known), as the reference caches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lwdock.rkme.fit import solve_simplex_qp

DECAY_RATE = 0.95
DEFAULT_MAX_MIXTURE = 5


@dataclass(frozen=True)
class Mixture:
    members: tuple[int, ...]  # positions in the candidate list, in the order accepted
    weights: tuple[float, ...]
    mmd2: float
    cross: float  # <u, mixture>
    self_product: float  # <mixture, mixture>


def greedy_mixture(
    cross: np.ndarray,
    diagonal: np.ndarray,
    gram_row: Callable[[int], np.ndarray],
    user_self: float,
    max_members: int = DEFAULT_MAX_MIXTURE,
    decay_rate: float = DECAY_RATE,
) -> Mixture | None:
    """`gram_row(i)` = <l_i, l_j> for every candidate j. None without candidates."""
    count = cross.shape[0]
    if count == 0 or max_members < 1:
        return None
    members: list[int] = []
    rows: list[np.ndarray] = []
    weights = np.ones(0)
    best_mmd2: float | None = None
    for _ in range(min(max_members, count)):
        step: tuple[float, int, np.ndarray] | None = None
        for candidate in range(count):
            if candidate in members:
                continue
            index = [*members, candidate]
            k = np.empty((len(index), len(index)))
            for i, row in enumerate(rows):
                k[i] = row[index]
                k[:, i] = row[index]
            k[-1, -1] = diagonal[candidate]
            c = cross[index]
            w = solve_simplex_qp(k, c) if len(index) > 1 else np.ones(1)
            mmd2 = float(user_self + w @ k @ w - 2.0 * c @ w)
            if step is None or mmd2 < step[0]:
                step = (mmd2, candidate, w)
        assert step is not None
        mmd2, candidate, w = step
        if best_mmd2 is not None and mmd2 > decay_rate * best_mmd2:
            break
        members.append(candidate)
        rows.append(np.asarray(gram_row(candidate), dtype=np.float64))
        weights, best_mmd2 = w, mmd2
    assert best_mmd2 is not None
    index = np.asarray(members)
    gram = np.stack([row[index] for row in rows])
    return Mixture(
        members=tuple(members),
        weights=tuple(float(x) for x in weights),
        mmd2=best_mmd2,
        cross=float(cross[index] @ weights),
        self_product=float(weights @ gram @ weights),
    )
