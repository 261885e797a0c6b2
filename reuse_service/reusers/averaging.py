"""Averaging reusers (REFERENCE.md §9, `AveragingReuser`), on outputs the members returned.

Differences from the reference (C6): `average_mean` averages each output column separately
(the reference also averages across a multi-output model's columns), and
`vote_by_probability` averages the scores as given (the reference applies a softmax to every
2-D output, even to probabilities) and returns the winning labels; the averaged scores
themselves are `average_mean` of the same outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lwdock.errors import InvalidArgument
from reuse_service.reusers.outputs import as_columns, as_labels, as_outputs


def _present(outputs: Sequence[np.ndarray], field_path: str) -> list[np.ndarray]:
    return [a for a in as_outputs(outputs, field_path) if a is not None]


def average_mean(outputs: Sequence[np.ndarray], *, field_path: str = "outputs") -> np.ndarray:
    """Per-column mean of the members' outputs: regression values or scores, as given.

    1-D outputs count as (N, 1). All outputs must have the same number of columns. The result
    is (N,) when every output is 1-D, else (N, C); float64.
    """
    arrays = _present(outputs, field_path)
    columns = [as_columns(a) for a in arrays]
    width = columns[0].shape[1]
    for i, c in enumerate(columns):
        if c.shape[1] != width:
            raise InvalidArgument.for_field(
                f"{field_path}[{i}]", f"has {c.shape[1]} columns, {field_path}[0] has {width}"
            )
    mean = np.mean(np.stack(columns).astype(np.float64, copy=False), axis=0)
    return mean[:, 0] if all(a.ndim == 1 for a in arrays) else mean


def majority_label(labels: np.ndarray) -> np.ndarray:
    """Per row of an (N, M) integer matrix, the most frequent value; ties -> smallest."""
    if labels.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    values, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    counts = np.zeros((labels.shape[0], values.size), dtype=np.int64)
    rows = np.arange(labels.shape[0])
    for m in range(labels.shape[1]):
        np.add.at(counts, (rows, codes[:, m]), 1)
    return values[np.argmax(counts, axis=1)]  # argmax: first maximum = smallest label


def vote_by_label(outputs: Sequence[np.ndarray], *, field_path: str = "outputs") -> np.ndarray:
    """Majority label per row (ties -> the smallest label), int64 (N,).

    Outputs of shape (N, C > 1) are per-class scores and are argmaxed first; 1-D and (N, 1)
    outputs must hold whole numbers (any integers; the reference needs non-negative ones).
    """
    arrays = _present(outputs, field_path)
    labels = np.stack([as_labels(a, f"{field_path}[{i}]") for i, a in enumerate(arrays)], axis=1)
    return majority_label(labels)


def vote_by_probability(
    outputs: Sequence[np.ndarray], *, field_path: str = "outputs"
) -> np.ndarray:
    """argmax of the per-class scores averaged over members (no softmax), int64 (N,).

    Every output must have shape (N, C) with the same C >= 2; ties -> the smallest class.
    """
    arrays = _present(outputs, field_path)
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] < 2:
            raise InvalidArgument.for_field(
                f"{field_path}[{i}]",
                f"needs per-class scores of shape (N, C >= 2), got {a.shape}",
            )
    return np.argmax(average_mean(arrays, field_path=field_path), axis=1).astype(np.int64)
