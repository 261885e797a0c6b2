"""Distances to scores: the reference's relative 0-1 matching score and our absolute similarity.

Reference score (REFERENCE.md §7.4, `_convert_dist_to_score(dist_ratio=0.1, min_score=0.92,
improve_score=0.7)`): from the minimum m, maximum M and mean a of the squared MMDs over the
candidate set (the filtered learnwares, plus the mixture's distance when there is one),
eps = 0.1 a; if m < eps then eps = m; else if (M - m) / (M - eps) < 0.92 then
eps = M - (M - m) / 0.92; s(d) = (M - d) / (M - eps), and s < 0.7 becomes min(sqrt(s), 0.7).
All distances equal: every score is 1.

Absolute similarity (ours): the cosine of the angle between the two kernel mean embeddings,
<u, l> / sqrt(<u, u> <l, l>). With a Gaussian kernel and non-negative weights it lies in
[0, 1]; it is 1 exactly when MMD = 0 for weights summing to 1, and it does not depend on any
other learnware (nor on how many there are).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DIST_RATIO = 0.1
MIN_SCORE = 0.92
IMPROVE_SCORE = 0.7


@dataclass(frozen=True)
class DistanceSummary:
    """min, max and mean of the squared MMDs of a candidate set of `count` distances."""

    minimum: float
    maximum: float
    mean: float
    count: int

    def with_distance(self, distance: float) -> DistanceSummary:
        """The summary with one more distance (the mixture's)."""
        return DistanceSummary(
            min(self.minimum, distance),
            max(self.maximum, distance),
            (self.mean * self.count + distance) / (self.count + 1),
            self.count + 1,
        )

    @classmethod
    def of(cls, distances: Sequence[float]) -> DistanceSummary:
        return cls(min(distances), max(distances), sum(distances) / len(distances), len(distances))


def reference_score(distance: float, summary: DistanceSummary) -> float:
    m, top, mean = summary.minimum, summary.maximum, summary.mean
    if top - m <= 0.0:
        return 1.0
    eps = DIST_RATIO * mean
    if m < eps:
        eps = m
    elif (top - m) / (top - eps) < MIN_SCORE:
        eps = top - (top - m) / MIN_SCORE
    score = (top - distance) / (top - eps)
    if score < IMPROVE_SCORE:
        score = min(math.sqrt(max(score, 0.0)), IMPROVE_SCORE)
    return min(max(score, 0.0), 1.0)


def similarity(cross: float, user_self: float, other_self: float) -> float:
    """<u, l> / sqrt(<u, u> <l, l>), clipped to [0, 1]."""
    denominator = math.sqrt(max(user_self, 0.0) * max(other_self, 0.0))
    if denominator <= 0.0:
        return 0.0
    return min(max(cross / denominator, 0.0), 1.0)
