"""Job selector (REFERENCE.md §9, `JobSelectorReuser`): route each user row to one member.

As the reference: the members' RKME specs are mixed to match the user's (simplex weights w
from the QP of §3.3 between the user's embedding and the members' Gram matrix), member i
contributes T_i = max(5, int(herding_num * w_i)) samples herded from its spec, labelled i;
the last T_i // 5 of each member's samples are held out to choose the classifier's settings,
which is then refitted on all samples; each user row goes to the member it predicts.

The classifier (the reference's is a 2,000-tree LightGBM, not a dependency here) is a
ridge classifier on random Fourier features: inputs standardised with the herded samples'
column means and standard deviations, `FEATURES` features of the Gaussian kernel
exp(-g ||a - b||^2 / D), one-vs-rest least squares on +-1 targets with an intercept. The
bandwidth factor g and the ridge are chosen on the held-out samples from `BANDWIDTHS` x
`RIDGES` (one eigendecomposition per bandwidth serves every ridge; ties go to the smoother
setting). It is smooth where boosted trees are axis-aligned, fits in tens of milliseconds,
and its state is a few arrays (`to_arrays`), so a fitted selector persists without pickle.

Other differences: herding is `lwdock.rkme.herding.herd` (running sums, candidates scaled
to the data, beta never mutated); the mixture weights may be given directly (C3: search's
weights) instead of a user spec, and with neither the members weigh equally; image specs
(whose kernel is not Gaussian) are never herded: their reduced-set points are the samples,
as the reference's image workflow does with `use_herding=False`; NaN/inf in user rows are
replaced by the herded samples' column means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lwdock.errors import InvalidArgument, LearnwareModelFailed
from lwdock.rkme.fit import solve_simplex_qp
from lwdock.rkme.herding import MAX_SAMPLES, herd
from lwdock.rkme.kernel import inner_product
from lwdock.rkme.spec import RKMESpec, SpecType
from reuse_service.reusers.outputs import as_rows, fill_non_finite, single_threaded_blas

MIN_SAMPLES_PER_MEMBER = 5  # the reference's max(5, int(herding_num * w_i))
VALIDATION_FRACTION_DIVISOR = 5  # the last T_i // 5 samples of each member are held out
FEATURES = 512
BANDWIDTHS = (0.25, 1.0)  # g in exp(-g ||a - b||^2 / D) on standardised rows
# ridge, in units of the mean eigenvalue of the features' Gram matrix; smoothest first: ties
# keep the earlier setting
RIDGES = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
PREDICT_CHUNK_ROWS = 8192
ARRAYS_VERSION = 1


def user_spec_from_rows(x: object, gamma: float = 0.1) -> RKMESpec:
    """The user's empirical embedding as a spec (z = rows, beta = 1/N): the reference's
    `generate_rkme_table_spec(X, reduce=False)`, which the job selector weighs members by."""
    rows = as_rows(x)
    if rows.shape[0] == 0:
        raise InvalidArgument.for_field("x", "needs at least one row")
    if not np.all(np.isfinite(rows)):
        means = np.nanmean(np.where(np.isfinite(rows), rows, np.nan), axis=0)
        if not np.all(np.isfinite(means)):
            raise InvalidArgument.for_field("x", "a column has no finite value")
        rows = fill_non_finite(rows, means)
    n = rows.shape[0]
    return RKMESpec(z=rows, beta=np.full(n, 1.0 / n), gamma=float(gamma), num_points=n)


def _check_specs(specs: Sequence[RKMESpec]) -> list[RKMESpec]:
    if specs is None or isinstance(specs, str | bytes) or len(specs) == 0:
        raise InvalidArgument.for_field("specs", "needs at least one member's specification")
    checked = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, RKMESpec):
            raise InvalidArgument.for_field(f"specs[{i}]", "must be an RKME specification")
        checked.append(spec.validate(f"specs[{i}]."))
    first = checked[0]
    for i, spec in enumerate(checked[1:], start=1):
        if spec.flat_z.shape[1] != first.flat_z.shape[1]:
            raise InvalidArgument.for_field(
                f"specs[{i}]",
                f"samples have {spec.flat_z.shape[1]} values, specs[0]'s have "
                f"{first.flat_z.shape[1]}",
            )
        if (spec.type is SpecType.IMAGE) != (first.type is SpecType.IMAGE):
            raise InvalidArgument.for_field(
                f"specs[{i}]", "image and non-image specifications cannot be mixed"
            )
    return checked


def mixture_weights(specs: Sequence[RKMESpec], user_spec: RKMESpec) -> np.ndarray:
    """Simplex weights w minimising ||sum_i w_i Phi_i - Phi_user||^2 (the reference's
    `_calculate_rkme_spec_mixture_weight`: Gram matrix of the members, <user, member_i>)."""
    specs = _check_specs(specs)
    if not isinstance(user_spec, RKMESpec):
        raise InvalidArgument.for_field("user_spec", "must be an RKME specification")
    user_spec.validate("user_spec.")
    if user_spec.flat_z.shape[1] != specs[0].flat_z.shape[1]:
        raise InvalidArgument.for_field(
            "user_spec",
            f"samples have {user_spec.flat_z.shape[1]} values, the members' have "
            f"{specs[0].flat_z.shape[1]}",
        )
    m = len(specs)
    gram = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            gram[i, j] = gram[j, i] = inner_product(specs[i], specs[j])
    v = np.array([inner_product(user_spec, spec) for spec in specs])
    return solve_simplex_qp(gram, v)


def _check_weights(weights: object, m: int) -> np.ndarray:
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidArgument.for_field("weights", "must be numbers") from None
    if w.shape != (m,):
        raise InvalidArgument.for_field("weights", f"needs one weight per member ({m})")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InvalidArgument.for_field("weights", "must be finite, >= 0, with a positive sum")
    return w / w.sum()


def _features(x: np.ndarray, omega: np.ndarray, offset: np.ndarray) -> np.ndarray:
    projected = x @ omega
    projected += offset
    np.cos(projected, out=projected)
    projected *= np.sqrt(2.0 / omega.shape[1])
    return projected


def _ridge_solutions(
    features: np.ndarray, targets: np.ndarray, ridges: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coef [F, M], intercept [M]) of centred least squares for each ridge."""
    f_mean = features.mean(axis=0)
    t_mean = targets.mean(axis=0)
    centred = features - f_mean
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    projected = vectors.T @ (centred.T @ (targets - t_mean))
    n = features.shape[0]
    solutions = []
    for ridge in ridges:
        penalty = ridge * n / features.shape[1]  # features' rows have squared norm ~1
        coef = vectors @ (projected / (eigenvalues + penalty)[:, None])
        solutions.append((coef, t_mean - f_mean @ coef))
    return solutions


@dataclass
class JobSelector:
    """A fitted router: `select(x)` gives each row's member index."""

    member_count: int
    columns: int
    weights: np.ndarray  # mixture weights the sample counts came from [M]
    sample_counts: np.ndarray  # herded (or reduced-set) samples per member [M]
    mean: np.ndarray  # standardisation of rows [D]; also fills NaN/inf in user rows
    scale: np.ndarray  # [D]
    omega: np.ndarray  # random Fourier frequencies [D, F] (F = 0 with one member)
    offset: np.ndarray  # [F]
    coef: np.ndarray  # [F, M]
    intercept: np.ndarray  # [M]
    bandwidth: float = 0.0  # chosen g
    ridge: float = 0.0  # chosen ridge
    validation_accuracy: float = 1.0  # on the held-out samples, before the final refit

    @classmethod
    def fit(
        cls,
        specs: Sequence[RKMESpec],
        *,
        herding_num: int = 1000,
        user_spec: RKMESpec | None = None,
        seed: int = 0,
        weights: Sequence[float] | np.ndarray | None = None,
        use_herding: bool | None = None,
    ) -> JobSelector:
        """Train the selector from the members' specs.

        herding_num: total herded samples (the reference's default 1,000). user_spec: the
        user's spec (e.g. `user_spec_from_rows(x)`) to weigh members by; or `weights` given
        directly; neither: equal weights. use_herding: None herds from Gaussian-kernel specs
        and uses an image spec's reduced set as is; False always uses reduced sets.
        """
        specs = _check_specs(specs)
        if not isinstance(herding_num, int | np.integer) or not 1 <= herding_num <= MAX_SAMPLES:
            raise InvalidArgument.for_field(
                "herding_num", f"must be an integer in [1, {MAX_SAMPLES}], got {herding_num!r}"
            )
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise InvalidArgument.for_field("seed", f"must be an integer >= 0, got {seed!r}")
        if user_spec is not None and weights is not None:
            raise InvalidArgument.for_field("weights", "give either weights or user_spec")
        m = len(specs)
        d = specs[0].flat_z.shape[1]
        if weights is not None:
            w = _check_weights(weights, m)
        elif user_spec is not None:
            w = mixture_weights(specs, user_spec)
        else:
            w = np.full(m, 1.0 / m)
        herding = use_herding is not False and specs[0].type is not SpecType.IMAGE
        if use_herding and specs[0].type is SpecType.IMAGE:
            raise InvalidArgument.for_field(
                "use_herding",
                "image specifications cannot be herded (their kernel is not "
                "Gaussian); leave it unset to use their reduced sets",
            )
        samples = []
        for i, spec in enumerate(specs):
            if herding:
                count = max(MIN_SAMPLES_PER_MEMBER, int(herding_num * w[i]))
                member_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
                samples.append(herd(spec, count, seed=member_seed).reshape(count, d))
            else:
                samples.append(spec.flat_z)
        counts = np.array([s.shape[0] for s in samples], dtype=np.int64)
        x_all = np.concatenate(samples).astype(np.float64)
        mean = x_all.mean(axis=0)
        scale = x_all.std(axis=0)
        scale[~(scale > 1e-12)] = 1.0
        if m == 1:
            return cls(
                1,
                d,
                w,
                counts,
                mean,
                scale,
                np.zeros((d, 0)),
                np.zeros(0),
                np.zeros((0, 1)),
                np.zeros(1),
            )
        with single_threaded_blas():
            return cls._train(samples, counts, w, mean, scale, seed)

    @classmethod
    def _train(
        cls,
        samples: list[np.ndarray],
        counts: np.ndarray,
        w: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        seed: int,
    ) -> JobSelector:
        m, d = len(samples), samples[0].shape[1]
        rng = np.random.default_rng(np.random.SeedSequence([seed, m, 7]))
        base = rng.standard_normal((d, FEATURES))
        offset = rng.uniform(0.0, 2.0 * np.pi, FEATURES)
        held = [int(c) // VALIDATION_FRACTION_DIVISOR for c in counts]
        labels = np.repeat(np.arange(m), counts)
        train_mask = np.concatenate(
            [np.arange(c) < c - h for c, h in zip(counts, held, strict=True)]
        )
        x_all = (np.concatenate(samples).astype(np.float64) - mean) / scale
        targets = 2.0 * np.eye(m)[labels] - 1.0

        best: tuple[float, float, float] | None = None  # (accuracy, g, ridge)
        if train_mask.all():  # too few samples to hold any out: the middle setting
            best = (float("nan"), BANDWIDTHS[0], RIDGES[1])
        for g in BANDWIDTHS if best is None else ():
            omega = base * np.sqrt(2.0 * g / d)
            features = _features(x_all, omega, offset)
            solutions = _ridge_solutions(features[train_mask], targets[train_mask], RIDGES)
            held_features, held_labels = features[~train_mask], labels[~train_mask]
            for ridge, (coef, intercept) in zip(RIDGES, solutions, strict=True):
                predicted = np.argmax(held_features @ coef + intercept, axis=1)
                accuracy = float(np.mean(predicted == held_labels))
                if best is None or accuracy > best[0]:
                    best = (accuracy, g, ridge)
        assert best is not None
        accuracy, g, ridge = best
        omega = base * np.sqrt(2.0 * g / d)
        coef, intercept = _ridge_solutions(_features(x_all, omega, offset), targets, [ridge])[0]
        return cls(m, d, w, counts, mean, scale, omega, offset, coef, intercept, g, ridge, accuracy)

    # --- use -------------------------------------------------------------------------------

    def select(self, x: np.ndarray) -> np.ndarray:
        """The member index (int64) for each row of x ([N, ...], flattened to D values)."""
        rows = as_rows(x, "x", self.columns)
        if self.member_count == 1:
            return np.zeros(rows.shape[0], dtype=np.int64)
        chosen = np.empty(rows.shape[0], dtype=np.int64)
        with single_threaded_blas():
            self._select_into(rows, chosen)
        return chosen

    def _select_into(self, rows: np.ndarray, chosen: np.ndarray) -> None:
        for start in range(0, rows.shape[0], PREDICT_CHUNK_ROWS):
            chunk = fill_non_finite(rows[start : start + PREDICT_CHUNK_ROWS], self.mean)
            chunk -= self.mean
            chunk /= self.scale
            scores = _features(chunk, self.omega, self.offset) @ self.coef + self.intercept
            chosen[start : start + chunk.shape[0]] = np.argmax(scores, axis=1)

    def predict(
        self, x: np.ndarray, predict_member: Callable[[int, np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Each row predicted by its selected member, reassembled in row order.

        predict_member(i, rows) is called once per member that has rows, with those rows of
        x as given (not flattened); it must return an array with one entry per row, and all
        members the same per-row shape. A wrong output raises LearnwareModelFailed naming
        the member index.
        """
        x = np.asarray(x)
        chosen = self.select(x)
        result: np.ndarray | None = None
        trailing: tuple[int, ...] | None = None
        parts: list[tuple[np.ndarray, np.ndarray, int]] = []
        for i in range(self.member_count):
            index = np.flatnonzero(chosen == i)
            if index.size == 0:
                continue
            output = np.asarray(predict_member(i, x[index]))
            name = f"member {i}"
            if output.ndim == 0 or output.shape[0] != index.size:
                raise LearnwareModelFailed(
                    name, f"returned {output.shape[:1] or 'no rows'} rows for {index.size} inputs"
                )
            if output.dtype.kind not in "biuf":
                raise LearnwareModelFailed(name, f"returned non-numeric output ({output.dtype})")
            if trailing is None:
                trailing = output.shape[1:]
            elif output.shape[1:] != trailing:
                raise LearnwareModelFailed(
                    name, f"returned per-row shape {output.shape[1:]}, another member {trailing}"
                )
            parts.append((index, output, i))
        if not parts:
            return np.zeros(0, dtype=np.float64)
        dtype = np.result_type(*(output for _, output, _ in parts))
        result = np.empty((chosen.shape[0], *(trailing or ())), dtype=dtype)
        for index, output, _ in parts:
            result[index] = output
        return result

    # --- persistence (no pickle) ------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "version": np.array(ARRAYS_VERSION),
            "member_count": np.array(self.member_count),
            "columns": np.array(self.columns),
            "weights": self.weights,
            "sample_counts": self.sample_counts,
            "mean": self.mean,
            "scale": self.scale,
            "omega": self.omega,
            "offset": self.offset,
            "coef": self.coef,
            "intercept": self.intercept,
            "settings": np.array([self.bandwidth, self.ridge, self.validation_accuracy]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> JobSelector:
        try:
            if int(arrays["version"]) != ARRAYS_VERSION:
                raise InvalidArgument.for_field("arrays.version", "unknown version")
            m, d = int(arrays["member_count"]), int(arrays["columns"])
            f = np.asarray(arrays["omega"]).shape[1]
            shapes = {
                "weights": (m,),
                "sample_counts": (m,),
                "mean": (d,),
                "scale": (d,),
                "omega": (d, f),
                "offset": (f,),
                "coef": (f, m if m > 1 else 1),
                "intercept": (m if m > 1 else 1,),
                "settings": (3,),
            }
            values = {}
            for key, shape in shapes.items():
                value = np.asarray(arrays[key])
                if value.shape != shape or value.dtype.kind not in "iuf":
                    raise InvalidArgument.for_field(f"arrays.{key}", f"needs shape {shape}")
                values[key] = value
        except KeyError as exc:
            raise InvalidArgument.for_field(f"arrays.{exc.args[0]}", "required") from None
        bandwidth, ridge, accuracy = (float(v) for v in values.pop("settings"))
        return cls(m, d, **values, bandwidth=bandwidth, ridge=ridge, validation_accuracy=accuracy)
