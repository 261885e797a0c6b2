"""Statistical specifications fitted locally: the user's data never leaves the machine.

Tables from numpy arrays, pandas DataFrames or files (.csv, .npy, .parquet); images (N, C, H,
W or N, H, W, C); texts. The fitting itself is `lwdock.rkme` (the same code spec_service runs);
specs are saved and loaded in the reference package's JSON, so `learnware` reads them too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.spec import RKMESpec

TABLE_SUFFIXES = (".csv", ".tsv", ".npy", ".parquet", ".pq")

Progress = Callable[[str, float], None]


def _frame_to_array(frame: Any, where: str) -> np.ndarray:
    """A DataFrame's values as float64; non-numeric columns are a field violation."""
    import pandas as pd

    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise InvalidArgument.for_field(
            where, f"{len(bad)} non-numeric column(s): {shown}; encode them as numbers first"
        )
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def as_table(data: Any, where: str = "data") -> np.ndarray:
    """A 2-D (or N-D) numeric array from an ndarray, a DataFrame, or anything array-like."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None  # type: ignore[assignment]
    if pd is not None and isinstance(data, pd.DataFrame):
        return _frame_to_array(data, where)
    if pd is not None and isinstance(data, pd.Series):
        return _frame_to_array(data.to_frame(), where)
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise InvalidArgument.for_field(where, f"needs numbers, got dtype {array.dtype}")
    return array


def read_table(path: str | Path) -> np.ndarray:
    """Rows of a .csv / .tsv (header row, numeric columns), .npy or .parquet file."""
    import pandas as pd

    source = Path(path)
    where = str(source)
    suffix = source.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidArgument.for_field(
            where, f"unsupported file type {suffix or '(none)'}; use {', '.join(TABLE_SUFFIXES)}"
        )
    try:
        if suffix == ".npy":
            return as_table(np.load(source, allow_pickle=False), where)
        if suffix in (".parquet", ".pq"):
            return _frame_to_array(pd.read_parquet(source), where)
        return _frame_to_array(pd.read_csv(source, sep="\t" if suffix == ".tsv" else ","), where)
    except InvalidArgument:
        raise
    except FileNotFoundError:
        raise InvalidArgument.for_field(where, "no such file") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument.for_field(where, f"cannot read: {exc}") from None


def fit_table(
    data: Any,
    *,
    gamma: float = 0.1,
    reduced_set_size: int = 100,
    steps: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> RKMESpec:
    """A table RKME of the rows of `data` (ndarray, DataFrame or a file path)."""
    from lwdock.rkme.fit import fit_table_rkme

    array = read_table(data) if isinstance(data, str | Path) else as_table(data)
    return fit_table_rkme(
        array,
        gamma=gamma,
        reduced_set_size=reduced_set_size,
        steps=steps,
        seed=seed,
        progress=progress,
    )


def fit_images(
    images: Any,
    *,
    layout: str = "NCHW",
    reduced_set_size: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> RKMESpec:
    """An image RKME (version 2, see lwdock.rkme.image) of images shaped like `layout`."""
    from lwdock.rkme import image

    kwargs: dict[str, Any] = {"layout": layout, "seed": seed, "progress": progress}
    if reduced_set_size is not None:
        kwargs["reduced_set_size"] = reduced_set_size
    if steps is not None:
        kwargs["steps"] = steps
    fitted = image.fit_image_rkme(np.asarray(images), **kwargs)
    fitted.spec.image_kernel, fitted.spec.msg = fitted.kernel, fitted.msg
    return fitted.spec


def fit_texts(
    texts: Sequence[str],
    *,
    gamma: float = 0.1,
    reduced_set_size: int = 100,
    steps: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> RKMESpec:
    """A text RKME: the table RKME of the texts' sentence embeddings, with their languages."""
    from lwdock.rkme.text import fit_text_rkme

    return fit_text_rkme(
        list(texts),
        gamma=gamma,
        reduced_set_size=reduced_set_size,
        steps=steps,
        seed=seed,
        progress=progress,
    )


def save_spec(spec: RKMESpec, path: str | Path) -> Path:
    """Write the reference's JSON (what `RKMETableSpecification.load` reads)."""
    target = Path(path)
    target.write_text(spec.to_reference_json())
    return target


def load_spec(source: str | Path | dict[str, Any] | RKMESpec) -> RKMESpec:
    """A spec from a path to reference JSON, its parsed dict, or a spec (returned as is)."""
    if isinstance(source, RKMESpec):
        return source
    if isinstance(source, dict):
        return RKMESpec.from_reference_dict(source)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument.for_field(str(path), f"cannot read: {exc.strerror}") from None
    return RKMESpec.from_reference_json(text, prefix=f"{path.name}:")


def load_json(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    path = Path(source)
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidArgument.for_field(str(path), f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidArgument.for_field(str(path), f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument.for_field(str(path), "must hold a JSON object")
    return value
