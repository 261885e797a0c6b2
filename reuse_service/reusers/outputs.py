"""Checking and shaping the arrays that reusers receive: member outputs, labels, inputs.

Every problem raises `InvalidArgument` naming the field (`outputs[2]`, `y`, `x`...), so a
servicer can pass it on unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.fit import _POOL

Mode = Literal["classification", "regression"]
MODES: tuple[str, ...] = ("classification", "regression")
MIN_LABELLED_ROWS = 5  # fewest labelled rows a fitted reuser accepts


def check_mode(mode: object, field_path: str = "mode") -> Mode:
    if mode not in MODES:
        raise InvalidArgument.for_field(field_path, f"must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _numeric(value: object, field_path: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.for_field(field_path, f"not an array: {exc}") from None
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iuf":
        raise InvalidArgument.for_field(
            field_path, f"must hold real numbers, got dtype {array.dtype}"
        )
    return array


def as_output(value: object, field_path: str, rows: int | None = None) -> np.ndarray:
    """One member's output: a finite real array of shape (N,) or (N, C)."""
    array = _numeric(value, field_path)
    if array.ndim not in (1, 2):
        raise InvalidArgument.for_field(
            field_path, f"must have shape (N,) or (N, C), got {array.shape}"
        )
    if rows is not None and array.shape[0] != rows:
        raise InvalidArgument.for_field(
            field_path, f"has {array.shape[0]} rows, expected {rows} (one per input row)"
        )
    if array.ndim == 2 and array.shape[1] == 0:
        raise InvalidArgument.for_field(field_path, "has no columns")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidArgument.for_field(field_path, "contains NaN or infinite values")
    return array


def as_outputs(
    outputs: object,
    field_path: str = "outputs",
    *,
    rows: int | None = None,
    count: int | None = None,
    required: Sequence[int] | None = None,
) -> list[np.ndarray | None]:
    """Member outputs, all with the same number of rows.

    With `required`, only those members' outputs are checked and the others may be None (a
    member that was not run); with `count`, there must be exactly that many entries.
    """
    if outputs is None or isinstance(outputs, str | bytes):
        raise InvalidArgument.for_field(field_path, "must be a sequence of arrays, one per member")
    try:
        items = list(outputs)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgument.for_field(
            field_path, "must be a sequence of arrays, one per member"
        ) from None
    if not items:
        raise InvalidArgument.for_field(field_path, "needs at least one member's output")
    if count is not None and len(items) != count:
        raise InvalidArgument.for_field(
            field_path, f"has {len(items)} entries, expected one per member ({count})"
        )
    wanted = range(len(items)) if required is None else required
    checked: list[np.ndarray | None] = [None] * len(items)
    for i in wanted:
        if items[i] is None:
            raise InvalidArgument.for_field(f"{field_path}[{i}]", "is required but missing")
        checked[i] = as_output(items[i], f"{field_path}[{i}]", rows)
        if rows is None:
            rows = checked[i].shape[0]  # type: ignore[union-attr]
    return checked


def as_columns(output: np.ndarray) -> np.ndarray:
    """(N,) as (N, 1); (N, C) unchanged."""
    return output.reshape(-1, 1) if output.ndim == 1 else output


def as_labels(output: np.ndarray, field_path: str) -> np.ndarray:
    """Integer labels from a member output: 1-D or (N, 1) must hold whole numbers; (N, C > 1)
    per-class scores are argmaxed (first maximum), as the reference does."""
    if output.ndim == 2 and output.shape[1] > 1:
        return np.argmax(output, axis=1).astype(np.int64)
    flat = output.reshape(-1)
    if flat.dtype.kind == "f":
        if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)):
            raise InvalidArgument.for_field(
                field_path, "labels must be whole numbers (or per-class scores of shape (N, C))"
            )
        if flat.size and np.abs(flat).max() > 2**53:
            raise InvalidArgument.for_field(field_path, "labels are too large")
    return flat.astype(np.int64)


def as_targets(y: object, mode: Mode, field_path: str = "y", rows: int | None = None) -> np.ndarray:
    """Labelled targets: finite; classification (N,) or (N, 1) whole numbers, returned 1-D;
    regression (N,) or (N, k), returned as given."""
    array = _numeric(y, field_path)
    if array.ndim == 2 and mode == "classification" and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim not in (1, 2) or (mode == "classification" and array.ndim != 1):
        expected = "(N,)" if mode == "classification" else "(N,) or (N, k)"
        raise InvalidArgument.for_field(
            field_path, f"must have shape {expected}, got {array.shape}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidArgument.for_field(field_path, "contains NaN or infinite labels")
    if rows is not None and array.shape[0] != rows:
        raise InvalidArgument.for_field(
            field_path, f"has {array.shape[0]} rows but the outputs have {rows}"
        )
    if array.shape[0] < MIN_LABELLED_ROWS:
        raise InvalidArgument.for_field(
            field_path,
            f"needs at least {MIN_LABELLED_ROWS} labelled rows, got {array.shape[0]}",
        )
    if mode == "classification":
        array = as_labels(array, field_path)
        if np.unique(array).size < 2:
            raise InvalidArgument.for_field(field_path, "needs at least two distinct classes")
    return array


def as_rows(x: object, field_path: str = "x", columns: int | None = None) -> np.ndarray:
    """Input rows as float64 (N, D), samples flattened; NaN/inf allowed (callers fill them)."""
    array = _numeric(x, field_path)
    if array.ndim < 1:
        raise InvalidArgument.for_field(field_path, "must have one row per sample")
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    rows = array.reshape(array.shape[0], width).astype(np.float64, copy=False)
    if columns is not None and rows.shape[1] != columns:
        raise InvalidArgument.for_field(
            field_path, f"rows have {rows.shape[1]} values, expected {columns}"
        )
    return rows


def fill_non_finite(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """x with NaN and +-inf replaced by `means` of their column; a copy (x is not changed)."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x.copy()
    filled = np.array(x, dtype=np.float64)
    filled[bad] = np.broadcast_to(means, x.shape)[bad]
    return filled


def column_means(x: np.ndarray, field_path: str = "x") -> np.ndarray:
    """Each column's mean over its finite values; a column with none raises InvalidArgument."""
    finite = np.isfinite(x)
    counts = finite.sum(axis=0)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise InvalidArgument.for_field(
            field_path, f"column {int(empty[0])} has no finite value (all NaN or infinite)"
        )
    return np.where(finite, x, 0.0).sum(axis=0) / counts


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS held to one thread while fitting (shared, reference-counted with the RKME code).

    The reusers' products are small; multi-threaded BLAS on a busy machine makes them many
    times slower (OpenBLAS threads spinning), e.g. 9 s instead of 0.7 s for a job selector.
    """
    with _POOL.session():
        yield
