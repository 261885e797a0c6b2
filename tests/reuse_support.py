"""Helpers for the reuse tests: learnware packages made in the test (the reference's layout:
learnware.yaml with !!python/tuple shapes, __init__.py importing learnware.model.base), their
semantic specs, and a small reuse service with tight sandbox limits."""

from __future__ import annotations

import io
import json
import pickle
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.rkme.fit import fit_table_rkme
from lwdock.semantic.checker import Semantic
from reuse_service.sandbox import SandboxLimits

FIXTURES = Path("/work/shared/fixtures/reference")
SMALL_SPEC = (FIXTURES / "table_small_d3.rkme.json").read_text()

# Small limits so every hostile package is stopped within a few seconds.
TIGHT = SandboxLimits(
    memory_bytes=1536 * 1024**2,
    cpu_s=2,
    cpu_lifetime_s=600,
    nproc=48,
    fsize_bytes=1024**2,
    tmp_bytes=16 * 1024**2,
    call_timeout_s=8.0,
    max_output_bytes=64 * 1024**2,
)

PICKLE_MODEL = textwrap.dedent(
    """
    import os
    import pickle

    import numpy as np

    from learnware.model.base import BaseModel


    class PickleLoadedModel(BaseModel):
        def __init__(self, input_shape, output_shape, pickle_filename="model.pkl"):
            super().__init__(input_shape=input_shape, output_shape=output_shape)
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), pickle_filename)
            with open(path, "rb") as fd:
                self.model = pickle.load(fd)

        def predict(self, X):
            return self.model.predict(X)
    """
)


def hostile_model(predict_body: str, init_body: str = "pass") -> str:
    """An __init__.py whose model runs `predict_body` (indented code returning an array)."""
    return textwrap.dedent(
        """
        import os
        import socket
        import sys
        import time

        import numpy as np

        from learnware.model.base import BaseModel


        class PickleLoadedModel(BaseModel):
            def __init__(self, input_shape, output_shape, **kwargs):
                super().__init__(input_shape=input_shape, output_shape=output_shape)
        {init}

            def predict(self, X):
        {body}
        """
    ).format(
        init=textwrap.indent(textwrap.dedent(init_body), " " * 8),
        body=textwrap.indent(textwrap.dedent(predict_body), " " * 8),
    )


def manifest(dim: int, output_shape: tuple[int, ...]) -> str:
    out = "\n".join(f"    - {d}" for d in output_shape)
    return (
        "model:\n  class_name: PickleLoadedModel\n  kwargs:\n"
        f"    input_shape: !!python/tuple\n    - {dim}\n"
        f"    output_shape: !!python/tuple\n{out}\n"
        "stat_specifications:\n- class_name: RKMETableSpecification\n"
        "  file_name: stat_spec.json\n  kwargs: {}\n  module_path: learnware.specification\n"
    )


def make_package(
    init_py: str,
    *,
    dim: int = 3,
    output_shape: tuple[int, ...] = (1,),
    spec_json: str = SMALL_SPEC,
    files: dict[str, bytes] | None = None,
    requirements: str = "",
) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("learnware.yaml", manifest(dim, output_shape))
        zf.writestr("__init__.py", init_py)
        zf.writestr("stat_spec.json", spec_json)
        if requirements:
            zf.writestr("requirements.txt", requirements)
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def model_package(model: Any, dim: int, output_shape: tuple[int, ...], spec_json: str) -> bytes:
    return make_package(
        PICKLE_MODEL,
        dim=dim,
        output_shape=output_shape,
        spec_json=spec_json,
        files={"model.pkl": pickle.dumps(model)},
    )


def semantic_dict(
    name: str, dim: int, *, task: str = "Regression", out_dim: int = 1
) -> dict[str, Any]:
    return {
        "Data": {"Values": ["Table"], "Type": "Class"},
        "Task": {"Values": [task], "Type": "Class"},
        "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
        "Scenario": {"Values": ["Education"], "Type": "Tag"},
        "License": {"Values": ["MIT"], "Type": "Class"},
        "Description": {"Values": f"A test learnware called {name}.", "Type": "String"},
        "Name": {"Values": name, "Type": "String"},
        "Input": {"Dimension": dim, "Description": {str(i): f"x{i}" for i in range(dim)}},
        "Output": {"Dimension": out_dim, "Description": {str(i): f"y{i}" for i in range(out_dim)}},
    }


def semantic(name: str, dim: int, **kwargs: Any) -> Semantic:
    return Semantic.from_reference_dict(semantic_dict(name, dim, **kwargs))


def semantic_json(name: str, dim: int, **kwargs: Any) -> str:
    return json.dumps(semantic_dict(name, dim, **kwargs))


def spec_json_for(x: np.ndarray, seed: int = 0) -> str:
    return fit_table_rkme(x, reduced_set_size=20, seed=seed).to_reference_json()
