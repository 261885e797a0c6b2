"""Feature augmentation (REFERENCE.md §9, `FeatureAugmentReuser`): the members' outputs as
extra features of a simple linear model fitted on the user's labelled rows.

As the reference: X_aug = [X | output_1 | ... | output_M] (1-D outputs as one column, score
matrices as they are); regression `RidgeCV(alphas=[0.01, 0.1, 1, 10, 100])`, classification
`LogisticRegressionCV(cv=5, max_iter=1000, random_state=0)`; NaN and +-inf in X become their
column's mean. Differences:

- The caller's array is never changed (the reference fills it in place).
- The column means are the training rows' and are kept: `predict` fills new rows with them
  (the reference uses the mean of whatever batch it is given, which fails for one row).
  `prepare_training_input(x)` / `prepare_input(x)` return those filled rows, which is what
  the reference's members see; run the members on them to reproduce it exactly.
- Classification uses `cv = min(5, rows of the rarest class)` folds (stratified, as
  scikit-learn's default), so a class needs 2 labelled rows, not 5.
- The fitted model is kept as arrays (coefficients, intercepts, classes, column means) and
  `predict` is the linear decision in numpy, so it persists without pickle
  (`to_arrays` / `from_arrays`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV

from lwdock.errors import InvalidArgument
from reuse_service.reusers.outputs import (
    Mode,
    as_columns,
    as_outputs,
    as_rows,
    as_targets,
    check_mode,
    column_means,
    fill_non_finite,
    single_threaded_blas,
)

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
LOGISTIC_FOLDS = 5
LOGISTIC_MAX_ITER = 1000
MIN_ROWS_PER_CLASS = 2
ARRAYS_VERSION = 1


def _augmented(x_filled: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([x_filled, *(as_columns(o).astype(np.float64) for o in outputs)], axis=1)


@dataclass
class FeatureAugment:
    mode: Mode
    x_columns: int
    output_columns: np.ndarray  # columns of each member's output [M]
    means: np.ndarray  # training column means of x, used to fill NaN/inf [x_columns]
    coef: np.ndarray  # [k, x_columns + sum(output_columns)]
    intercept: np.ndarray  # [k]
    classes: np.ndarray  # classification labels (ascending); empty for regression
    target_ndim: int = 1  # regression: 1 for y of shape (N,), 2 for (N, k)
    regularisation: float = 0.0  # the chosen alpha (ridge) or C (logistic)

    @staticmethod
    def prepare_training_input(x: np.ndarray) -> np.ndarray:
        """x's rows, flattened, with NaN/inf replaced by x's own column means (a copy)."""
        rows = as_rows(x)
        return fill_non_finite(rows, column_means(rows))

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        """x's rows, flattened, with NaN/inf replaced by the training column means (a copy)."""
        return fill_non_finite(as_rows(x, "x", self.x_columns), self.means)

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        member_outputs: Sequence[np.ndarray],
        y: np.ndarray,
        *,
        mode: Mode,
    ) -> FeatureAugment:
        """Fit the linear model on [x | member outputs] against y (labelled rows)."""
        mode = check_mode(mode)
        rows = as_rows(x)
        target = as_targets(y, mode, "y", rows=rows.shape[0])
        outputs = [
            a
            for a in as_outputs(member_outputs, "member_outputs", rows=rows.shape[0])
            if a is not None
        ]
        means = column_means(rows)
        features = _augmented(fill_non_finite(rows, means), outputs)
        output_columns = np.array([as_columns(o).shape[1] for o in outputs], dtype=np.int64)
        if mode == "regression":
            with single_threaded_blas():
                model = RidgeCV(alphas=RIDGE_ALPHAS).fit(features, target.astype(np.float64))
            coef = np.atleast_2d(model.coef_)
            intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
            return cls(
                mode,
                rows.shape[1],
                output_columns,
                means,
                coef,
                intercept,
                np.zeros(0),
                target.ndim,
                float(model.alpha_),
            )
        classes, counts = np.unique(target, return_counts=True)
        rarest = int(counts.min())
        if rarest < MIN_ROWS_PER_CLASS:
            raise InvalidArgument.for_field(
                "y",
                f"class {classes[np.argmin(counts)]} has {rarest} labelled row; each class "
                f"needs at least {MIN_ROWS_PER_CLASS}",
            )
        model = LogisticRegressionCV(
            cv=min(LOGISTIC_FOLDS, rarest),
            max_iter=LOGISTIC_MAX_ITER,
            random_state=0,
            # scikit-learn 1.9's defaults, spelled out (its defaults change in 1.10-1.11)
            l1_ratios=(0.0,),
            scoring="accuracy",
            use_legacy_attributes=False,
        )
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features, target)
        return cls(
            mode,
            rows.shape[1],
            output_columns,
            means,
            np.asarray(model.coef_),
            np.asarray(model.intercept_, dtype=np.float64),
            np.asarray(model.classes_),
            1,
            float(np.ravel(model.C_)[0]),
        )

    def decision(self, x: np.ndarray, member_outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The linear model's raw output on [filled x | outputs]: [N, k]."""
        rows = as_rows(x, "x", self.x_columns)
        outputs = [
            a
            for a in as_outputs(
                member_outputs, "member_outputs", rows=rows.shape[0], count=self.output_columns.size
            )
            if a is not None
        ]
        for i, o in enumerate(outputs):
            if as_columns(o).shape[1] != self.output_columns[i]:
                raise InvalidArgument.for_field(
                    f"member_outputs[{i}]",
                    f"has {as_columns(o).shape[1]} columns, the reuser was fitted with "
                    f"{int(self.output_columns[i])}",
                )
        features = _augmented(fill_non_finite(rows, self.means), outputs)
        return features @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray, member_outputs: Sequence[np.ndarray]) -> np.ndarray:
        """Regression values ((N,) or (N, k) as y was) or classification labels ((N,))."""
        scores = self.decision(x, member_outputs)
        if self.mode == "regression":
            return scores[:, 0] if self.target_ndim == 1 else scores
        if scores.shape[1] == 1:  # binary: scikit-learn's rule, decision > 0 -> classes[1]
            return self.classes[(scores[:, 0] > 0).astype(np.int64)]
        return self.classes[np.argmax(scores, axis=1)]

    # --- persistence (no pickle) ------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "version": np.array(ARRAYS_VERSION),
            "mode": np.array(self.mode),
            "x_columns": np.array(self.x_columns),
            "output_columns": self.output_columns,
            "means": self.means,
            "coef": self.coef,
            "intercept": self.intercept,
            "classes": self.classes,
            "target_ndim": np.array(self.target_ndim),
            "regularisation": np.array(self.regularisation),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureAugment:
        try:
            if int(arrays["version"]) != ARRAYS_VERSION:
                raise InvalidArgument.for_field("arrays.version", "unknown version")
            mode = check_mode(str(arrays["mode"]), "arrays.mode")
            d = int(arrays["x_columns"])
            output_columns = np.asarray(arrays["output_columns"], dtype=np.int64).reshape(-1)
            coef = np.asarray(arrays["coef"], dtype=np.float64)
            intercept = np.asarray(arrays["intercept"], dtype=np.float64).reshape(-1)
            means = np.asarray(arrays["means"], dtype=np.float64).reshape(-1)
            classes = np.asarray(arrays["classes"]).reshape(-1)
            width = d + int(output_columns.sum())
            if coef.ndim != 2 or coef.shape[1] != width or intercept.shape != coef.shape[:1]:
                raise InvalidArgument.for_field(
                    "arrays.coef", f"needs shape (k, {width}) with one intercept per row"
                )
            if means.shape != (d,):
                raise InvalidArgument.for_field("arrays.means", f"needs shape ({d},)")
            if mode == "classification" and classes.size != max(2, coef.shape[0]):
                raise InvalidArgument.for_field("arrays.classes", "one label per class")
            return cls(
                mode,
                d,
                output_columns,
                means,
                coef,
                intercept,
                classes,
                int(arrays["target_ndim"]),
                float(arrays["regularisation"]),
            )
        except KeyError as exc:
            raise InvalidArgument.for_field(f"arrays.{exc.args[0]}", "required") from None
