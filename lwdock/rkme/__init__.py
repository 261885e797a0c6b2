"""Reduced-set kernel mean embeddings (RKME): the statistical specification of a learnware."""

from lwdock.rkme.kernel import gaussian_kernel, inner_product, mmd2
from lwdock.rkme.spec import RKMESpec, SpecType

__all__ = ["RKMESpec", "SpecType", "gaussian_kernel", "inner_product", "mmd2"]
