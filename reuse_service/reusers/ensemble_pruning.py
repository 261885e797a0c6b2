"""Ensemble pruning (REFERENCE.md §9, `EnsemblePruningReuser`): choose which members to
average, from a few labelled rows.

The reference's MDEP (multi-objective evolutionary search with geatpy, which does not install
on Python 3.11) is replaced by a deterministic subset search on the same validation rows:

- The ensemble of a subset S is what `predict` returns: classification, the majority vote of
  the members' labels (per-class scores argmaxed first; ties -> the smallest label), as the
  reference predicts; regression, the mean of the members' outputs.
- Each subset is scored by its validation error: the number of wrong labels, or the mean
  squared error. Among equal errors the smaller subset wins, then the one whose member
  indices come first (so the choice is reproducible and never needlessly large).
- Up to `EXHAUSTIVE_MAX_MEMBERS` members (and a bounded amount of work), every non-empty
  subset is scored, visiting them in Gray-code order so that each step adds or removes one
  member's votes (or outputs) from a running total: the exact optimum of that objective.
- Beyond that, greedy forward selection (Caruana et al., 2004, without replacement): start
  from the best single member, repeatedly add the member that gives the lowest error (even if
  it is higher than before), through all M sizes, and keep the best prefix.

Either way the best single member is a candidate, so the chosen ensemble is never worse than
the best single member on the validation rows. The search has no random choices: `seed` is
accepted for the interface and recorded, nothing depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lwdock.errors import InvalidArgument
from reuse_service.reusers.averaging import majority_label
from reuse_service.reusers.outputs import (
    Mode,
    as_columns,
    as_labels,
    as_outputs,
    as_targets,
    check_mode,
)

EXHAUSTIVE_MAX_MEMBERS = 12
EXHAUSTIVE_MAX_WORK = 50_000_000  # subsets x rows x (classes or columns)
ARRAYS_VERSION = 1


@dataclass(frozen=True)
class _Objective:
    """Validation error of subsets, from running totals over the members."""

    mode: Mode
    members: np.ndarray  # classification: [M, N] class codes; regression: [M, N, k]
    target: np.ndarray  # classification: [N] class codes; regression: [N, k]
    class_count: int = 0

    def empty_total(self) -> np.ndarray:
        n = self.target.shape[0]
        if self.mode == "classification":
            return np.zeros((n, self.class_count), dtype=np.int64)
        return np.zeros(self.target.shape, dtype=np.float64)

    def add(self, total: np.ndarray, member: int, sign: int) -> None:
        if self.mode == "classification":
            total[np.arange(total.shape[0]), self.members[member]] += sign  # one entry a row
        else:
            total += sign * self.members[member]

    def error(self, total: np.ndarray, size: int) -> float:
        if self.mode == "classification":
            return float(np.count_nonzero(np.argmax(total, axis=1) != self.target))
        return float(np.mean((total / size - self.target) ** 2))

    def work_per_subset(self) -> int:
        n = self.target.shape[0]
        return n * (self.class_count if self.mode == "classification" else self.target.shape[1])


def _key(error: float, subset: Sequence[int]) -> tuple[float, int, tuple[int, ...]]:
    return (error, len(subset), tuple(sorted(subset)))


def _exhaustive(objective: _Objective, m: int) -> list[int]:
    total = objective.empty_total()
    chosen = np.zeros(m, dtype=bool)
    best: tuple[float, int, tuple[int, ...]] | None = None
    previous_gray = 0
    for step in range(1, 1 << m):
        gray = step ^ (step >> 1)
        member = (gray ^ previous_gray).bit_length() - 1
        previous_gray = gray
        chosen[member] = not chosen[member]
        objective.add(total, member, 1 if chosen[member] else -1)
        subset = np.flatnonzero(chosen).tolist()
        key = _key(objective.error(total, len(subset)), subset)
        if best is None or key < best:
            best = key
    assert best is not None
    return list(best[2])


def _greedy(objective: _Objective, m: int) -> list[int]:
    total = objective.empty_total()
    chosen: list[int] = []
    best: tuple[float, int, tuple[int, ...]] | None = None
    remaining = list(range(m))
    while remaining:
        step_best: tuple[float, int] | None = None
        for member in remaining:
            objective.add(total, member, 1)
            error = objective.error(total, len(chosen) + 1)
            objective.add(total, member, -1)
            if step_best is None or error < step_best[0]:
                step_best = (error, member)
        assert step_best is not None
        error, member = step_best
        objective.add(total, member, 1)
        chosen.append(member)
        remaining.remove(member)
        key = _key(error, chosen)
        if best is None or key < best:
            best = key
    assert best is not None
    return list(best[2])


@dataclass
class EnsemblePruning:
    """The chosen members (`selected`, ascending indices into the members) and the mode."""

    mode: Mode
    member_count: int
    selected: list[int]
    validation_error: float = 0.0  # wrong labels (classification) or MSE (regression)
    seed: int = 0
    searched: str = field(default="exhaustive")  # "exhaustive" or "greedy"

    @classmethod
    def fit(
        cls,
        member_outputs: Sequence[np.ndarray],
        y: np.ndarray,
        *,
        mode: Mode,
        seed: int = 0,
    ) -> EnsemblePruning:
        """Choose the subset of members with the lowest validation error on (outputs, y).

        member_outputs: one array per member on the same N labelled rows: classification
        labels (N,) or per-class scores (N, C); regression values (N,) or (N, k) matching y.
        """
        mode = check_mode(mode)
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise InvalidArgument.for_field("seed", f"must be an integer >= 0, got {seed!r}")
        outputs = [a for a in as_outputs(member_outputs, "member_outputs") if a is not None]
        target = as_targets(y, mode, "y", rows=outputs[0].shape[0])
        m = len(outputs)
        if mode == "classification":
            labels = np.stack([as_labels(a, f"member_outputs[{i}]") for i, a in enumerate(outputs)])
            values, codes = np.unique(np.concatenate([labels.ravel(), target]), return_inverse=True)
            codes = codes.reshape(-1)
            objective = _Objective(
                mode,
                codes[: labels.size].reshape(labels.shape),
                codes[labels.size :],
                values.size,
            )
        else:
            target_columns = as_columns(target).astype(np.float64)
            columns = []
            for i, a in enumerate(outputs):
                c = as_columns(a)
                if c.shape[1] != target_columns.shape[1]:
                    raise InvalidArgument.for_field(
                        f"member_outputs[{i}]",
                        f"has {c.shape[1]} columns, y has {target_columns.shape[1]}",
                    )
                columns.append(c.astype(np.float64))
            objective = _Objective(mode, np.stack(columns), target_columns)
        exhaustive = (
            m <= EXHAUSTIVE_MAX_MEMBERS
            and ((1 << m) - 1) * objective.work_per_subset() <= EXHAUSTIVE_MAX_WORK
        )
        selected = _exhaustive(objective, m) if exhaustive else _greedy(objective, m)
        total = objective.empty_total()
        for member in selected:
            objective.add(total, member, 1)
        return cls(
            mode=mode,
            member_count=m,
            selected=selected,
            validation_error=objective.error(total, len(selected)),
            seed=int(seed),
            searched="exhaustive" if exhaustive else "greedy",
        )

    def predict(self, member_outputs: Sequence[np.ndarray | None]) -> np.ndarray:
        """The chosen members' vote (classification, int64 (N,)) or mean (regression, (N,)
        or (N, k)). One entry per member; entries of members not selected may be None (they
        need not be run)."""
        outputs = as_outputs(
            member_outputs, "member_outputs", count=self.member_count, required=self.selected
        )
        chosen: list[np.ndarray] = [outputs[i] for i in self.selected]  # type: ignore[misc]
        if self.mode == "classification":
            labels = [
                as_labels(a, f"member_outputs[{i}]")
                for i, a in zip(self.selected, chosen, strict=True)
            ]
            return majority_label(np.stack(labels, axis=1))
        columns = [as_columns(a) for a in chosen]
        width = columns[0].shape[1]
        for i, c in zip(self.selected, columns, strict=True):
            if c.shape[1] != width:
                raise InvalidArgument.for_field(
                    f"member_outputs[{i}]", f"has {c.shape[1]} columns, expected {width}"
                )
        mean = np.mean(np.stack(columns).astype(np.float64), axis=0)
        return mean[:, 0] if all(a.ndim == 1 for a in chosen) else mean

    # --- persistence (no pickle) ------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "version": np.array(ARRAYS_VERSION),
            "mode": np.array(self.mode),
            "member_count": np.array(self.member_count),
            "selected": np.array(self.selected, dtype=np.int64),
            "validation_error": np.array(self.validation_error),
            "seed": np.array(self.seed),
            "searched": np.array(self.searched),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EnsemblePruning:
        try:
            if int(arrays["version"]) != ARRAYS_VERSION:
                raise InvalidArgument.for_field("arrays.version", "unknown version")
            mode = check_mode(str(arrays["mode"]), "arrays.mode")
            m = int(arrays["member_count"])
            selected = np.asarray(arrays["selected"])
            if (
                selected.ndim != 1
                or selected.size == 0
                or selected.dtype.kind not in "iu"
                or np.any(selected < 0)
                or np.any(selected >= m)
                or np.unique(selected).size != selected.size
            ):
                raise InvalidArgument.for_field(
                    "arrays.selected", f"must be distinct member indices in [0, {m})"
                )
            return cls(
                mode=mode,
                member_count=m,
                selected=sorted(int(i) for i in selected),
                validation_error=float(arrays["validation_error"]),
                seed=int(arrays["seed"]),
                searched=str(arrays["searched"]),
            )
        except KeyError as exc:
            raise InvalidArgument.for_field(f"arrays.{exc.args[0]}", "required") from None
