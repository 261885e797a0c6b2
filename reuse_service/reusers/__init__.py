"""The reference's reusers as plain numpy/scikit-learn domain code (REFERENCE.md §9).

Nothing here runs learnware code: reusers receive the members' outputs as arrays, or (the
job selector) a callback that runs a member on some rows. Bad input raises
`lwdock.errors.InvalidArgument` naming the field. See docs/reusers.md.
"""

from reuse_service.reusers.averaging import average_mean, vote_by_label, vote_by_probability
from reuse_service.reusers.ensemble_pruning import EnsemblePruning
from reuse_service.reusers.feature_augment import FeatureAugment
from reuse_service.reusers.job_selector import JobSelector

__all__ = [
    "EnsemblePruning",
    "FeatureAugment",
    "JobSelector",
    "average_mean",
    "vote_by_label",
    "vote_by_probability",
]
