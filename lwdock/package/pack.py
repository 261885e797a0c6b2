"""Build learnware zips in the reference's layout (REFERENCE.md §1), for the SDK and CLI.

A package holds `learnware.yaml` (shapes as `!!python/tuple`, `stat_specifications` always
written so 0.3 and 0.4 read it alike), `__init__.py` (by default the reference template's
`PickleLoadedModel`, which imports `learnware.model.base.BaseModel` as every reference
learnware does), the pickled model, the statistical spec as the reference's JSON
(`stat_spec.json`, the 0.3 default name) and `requirements.txt`. Entries are stored
uncompressed with fixed times and modes, in a fixed order, so the same inputs give the same
bytes (and the same sha256).

`pack_folder` zips an existing learnware folder the way `learnware.utils.zip_learnware_folder`
does (relative paths; no `*.pyc`, `__pycache__` or symlinks). `check_package` runs the
registry's own validation locally, so a bad package fails before it is uploaded.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lwdock.errors import InvalidArgument
from lwdock.package.manifest import MANIFEST_FILE
from lwdock.package.validate import ValidatedPackage, validate_package
from lwdock.rkme.spec import RKMESpec, SpecType
from lwdock.semantic.checker import Features, Semantic

SPEC_FILE = "stat_spec.json"
MODEL_FILE = "model.pkl"
MODULE_FILE = "__init__.py"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = (".pyc", ".pyo")

# The reference template's model class (learnware/tests/templates, PickleModelTemplate).
PICKLE_MODEL_SOURCE = """import os
import pickle

import numpy as np

from learnware.model.base import BaseModel


class PickleLoadedModel(BaseModel):
    def __init__(
        self,
        input_shape,
        output_shape,
        predict_method="predict",
        fit_method="fit",
        finetune_method="finetune",
        pickle_filename="model.pkl",
    ):
        super(PickleLoadedModel, self).__init__(input_shape=input_shape, output_shape=output_shape)
        dir_path = os.path.dirname(os.path.abspath(__file__))
        self.pickle_filepath = os.path.join(dir_path, pickle_filename)
        with open(self.pickle_filepath, "rb") as fd:
            self.model = pickle.load(fd)
        self.predict_method = predict_method
        self.fit_method = fit_method
        self.finetune_method = finetune_method

    def predict(self, X: np.ndarray) -> np.ndarray:
        return getattr(self.model, self.predict_method)(X)

    def fit(self, X: np.ndarray, y: np.ndarray):
        getattr(self.model, self.fit_method)(X, y)

    def finetune(self, X: np.ndarray, y: np.ndarray):
        getattr(self.model, self.finetune_method)(X, y)
"""

_SPEC_CLASS = {
    SpecType.TABLE: "RKMETableSpecification",
    SpecType.IMAGE: "RKMEImageSpecification",
    SpecType.TEXT: "RKMETextSpecification",
}


def _shape(value: int | Sequence[int] | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    shape = (value,) if isinstance(value, int) else tuple(value)
    valid = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    if not shape or not valid:
        raise InvalidArgument.for_field(name, f"must be positive integers, got {value!r}")
    return tuple(int(d) for d in shape)


def manifest_yaml(
    *,
    class_name: str,
    kwargs: Mapping[str, Any],
    stat_specs: Iterable[tuple[str, str]],
    module_path: str = MODULE_FILE,
) -> str:
    """`learnware.yaml` as the reference's templates write it (`yaml.dump`, so tuples become
    `!!python/tuple`). stat_specs: (class_name, file_name) pairs."""
    document = {
        "model": {"class_name": class_name, "module_path": module_path, "kwargs": dict(kwargs)},
        "stat_specifications": [
            {
                "module_path": "learnware.specification",
                "class_name": spec_class,
                "file_name": file_name,
                "kwargs": {},
            }
            for spec_class, file_name in stat_specs
        ],
    }
    return yaml.dump(document, sort_keys=False)


def zip_files(files: Mapping[str, bytes]) -> bytes:
    """A deterministic zip of `files` (name -> bytes) in name order, stored uncompressed."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, files[name])
    return out.getvalue()


@dataclass(frozen=True)
class PickledModel:
    """A model already pickled (e.g. a `model.pkl` file), packed as is."""

    data: bytes


def _requirements(model: object, requirements: Sequence[str] | None) -> str:
    if requirements is not None or isinstance(model, PickledModel):
        lines = list(requirements or [])
    else:  # the model's own library, pinned to the version that pickled it
        lines = []
        root = type(model).__module__.split(".")[0]
        if root == "sklearn":
            import sklearn

            lines.append(f"scikit-learn=={sklearn.__version__}")
        elif root in ("lightgbm", "xgboost", "torch"):
            import importlib

            lines.append(f"{root}=={importlib.import_module(root).__version__}")
    return "".join(f"{line}\n" for line in lines)


def pack_model(
    model: object,
    spec: RKMESpec,
    *,
    input_shape: int | Sequence[int] | None,
    output_shape: int | Sequence[int] | None,
    predict_method: str = "predict",
    requirements: Sequence[str] | None = None,
    module_source: str | None = None,
    class_name: str = "PickleLoadedModel",
    model_kwargs: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> bytes:
    """A learnware zip for a picklable model object (or `PickledModel` bytes) and its
    statistical spec.

    By default the model runs through the reference's `PickleLoadedModel` template, calling
    `predict_method` (e.g. "predict_proba"). `module_source` / `class_name` /
    `model_kwargs` replace the template with your own `__init__.py` class (it gets
    `input_shape`, `output_shape`, `pickle_filename` and `model_kwargs` as keyword
    arguments). `requirements`: requirements.txt lines (default: the model's library pinned).
    """
    kwargs: dict[str, Any] = {
        "input_shape": _shape(input_shape, "input_shape"),
        "output_shape": _shape(output_shape, "output_shape"),
    }
    if module_source is None:
        kwargs.update(
            predict_method=predict_method,
            fit_method="fit",
            finetune_method="finetune",
            pickle_filename=MODEL_FILE,
        )
    else:
        kwargs["pickle_filename"] = MODEL_FILE
    kwargs.update(model_kwargs or {})
    files: dict[str, bytes] = {
        MANIFEST_FILE: manifest_yaml(
            class_name=class_name, kwargs=kwargs, stat_specs=[(_SPEC_CLASS[spec.type], SPEC_FILE)]
        ).encode(),
        MODULE_FILE: (module_source or PICKLE_MODEL_SOURCE).encode(),
        MODEL_FILE: model.data
        if isinstance(model, PickledModel)
        else pickle.dumps(model, protocol=4),
        SPEC_FILE: spec.to_reference_json().encode(),
        "requirements.txt": _requirements(model, requirements).encode(),
    }
    for name, data in (extra_files or {}).items():
        if name in files:
            raise InvalidArgument.for_field("extra_files", f"{name!r} is written by pack_model")
        files[name] = data
    return zip_files(files)


def pack_folder(folder: str | os.PathLike[str], *, spec: RKMESpec | None = None) -> bytes:
    """Zip a learnware folder (its `learnware.yaml` at the top). With `spec`, the spec is
    written as `stat_spec.json` (replacing that file if the folder has one)."""
    root = Path(folder)
    if not (root / MANIFEST_FILE).is_file():
        raise InvalidArgument.for_field(str(root), f"no {MANIFEST_FILE} in this folder")
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_symlink() or filename.endswith(_SKIP_SUFFIXES):
                continue
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    if spec is not None:
        files[SPEC_FILE] = spec.to_reference_json().encode()
    return zip_files(files)


def semantic(
    *,
    name: str,
    description: str,
    data_type: str = "Table",
    task: str = "Classification",
    library: str = "Scikit-learn",
    scenarios: Sequence[str] = ("Others",),
    license: str = "MIT",
    input_dimension: int | None = None,
    input_descriptions: Mapping[int, str] | None = None,
    output_dimension: int | None = None,
    output_descriptions: Mapping[int, str] | None = None,
) -> Semantic:
    """A semantic specification (lwdock.semantic.Semantic; `.to_reference_dict()` gives the
    reference's JSON). Checked by `check_package`, and by the registry at upload."""

    def features(dimension: int | None, texts: Mapping[int, str] | None) -> Features | None:
        return None if dimension is None else Features(int(dimension), dict(texts or {}))

    return Semantic(
        data_type=data_type,
        task=task,
        library=library,
        scenarios=tuple(scenarios),
        license=license,
        name=name,
        description=description,
        input=features(input_dimension, input_descriptions),
        output=features(output_dimension, output_descriptions),
    )


def check_package(data: bytes, semantic_spec: Semantic) -> ValidatedPackage:
    """The registry's upload validation, run locally: raises one InvalidArgument listing every
    problem (with field paths) or returns what the registry would store."""
    return validate_package(data, semantic_spec)


def write_package(data: bytes, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.write_bytes(data)
    return target
