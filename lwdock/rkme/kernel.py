"""Gaussian-kernel inner products and squared MMD between RKME specifications.

Computed as the reference does (float64, ||a||^2 - 2 a.b + ||b||^2 unclamped, the left
operand's gamma), so results match its `inner_prod` and `dist` to ~1e-12 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.spec import RKMESpec, SpecType


def gaussian_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """k(a_i, b_j) = exp(-gamma ||a_i - b_j||^2) for rows of a [n, d] and b [m, d]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
    return np.exp(-gamma * sq)


def _images(left: RKMESpec, right: RKMESpec) -> tuple[Any, Any] | None:
    """Both specs as ImageRKME when either is an image spec (their kernel is not Gaussian)."""
    if SpecType.IMAGE not in (left.type, right.type):
        return None
    from lwdock.rkme.image import ImageRKME

    for side, spec in (("left", left), ("right", right)):
        if spec.type is not SpecType.IMAGE or spec.image_kernel is None:
            raise InvalidArgument.for_field(side, "image specs compare only with image specs")
    return (
        ImageRKME(left, left.image_kernel, left.msg),
        ImageRKME(right, right.image_kernel, right.msg),
    )


def inner_product(left: RKMESpec, right: RKMESpec) -> float:
    """<left, right> in the RKHS, with left's gamma (image specs: their common kernel)."""
    images = _images(left, right)
    if images is not None:
        from lwdock.rkme.image import image_inner_product

        return image_inner_product(*images)
    kernel = gaussian_kernel(left.flat_z, right.flat_z, left.gamma)
    return float(left.beta @ kernel @ right.beta)


def mmd2(left: RKMESpec, right: RKMESpec) -> float:
    """Squared MMD, the reference's `left.dist(right)`: <l,l> - 2<l,r> + <r,r>."""
    images = _images(left, right)
    if images is not None:
        from lwdock.rkme.image import image_mmd2

        return image_mmd2(*images)
    return (
        inner_product(left, left) - 2.0 * inner_product(left, right) + inner_product(right, right)
    )
