"""The `lwdock` CLI as a subprocess, for what needs no server: `spec fit` on .csv / .npy /
.parquet, `pack`, and the script contract (`--json` last line, exit codes, errors on stderr)
including an unreachable service."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from lwdock.client.commands import EXIT_INVALID, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from lwdock.package.pack import check_package
from lwdock.semantic.checker import Semantic
from tests.conftest import FIXTURES, venv_bin
from tests.sdk_support import free_port

DIGITS = FIXTURES / "digits_classes0to4_first100.npy"
SEMANTIC = FIXTURES / "learnware_digits_svc.semantic.json"


def lwdock(*args: str | Path, home: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")}
    env["LWDOCK_HOME"] = str(home)
    done = subprocess.run(
        [venv_bin("lwdock"), *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_spec_fit_reads_csv_npy_and_parquet_alike(tmp_path: Path) -> None:
    X = np.load(FIXTURES / "table_a_d10.npy")[:300]
    np.save(tmp_path / "x.npy", X)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame.to_csv(tmp_path / "x.csv", index=False)
    frame.to_parquet(tmp_path / "x.parquet")
    specs = []
    for suffix in ("npy", "csv", "parquet"):
        out = tmp_path / f"{suffix}.json"
        code, stdout, stderr = lwdock(
            "spec", "fit", tmp_path / f"x.{suffix}", "-o", out, "--k", "20", "--json",
            home=tmp_path,
        )  # fmt: skip
        assert code == EXIT_OK, stderr
        result = last_json(stdout)
        assert result["output"] == str(out)
        assert (result["num_points"], result["k"], result["sample_shape"]) == (300, 20, [10])
        specs.append(json.loads(out.read_text()))
    assert specs[0]["z"] == specs[1]["z"] == specs[2]["z"]
    assert specs[0]["type"] == "RKMETableSpecification"


def test_errors_exit_codes_and_the_json_error_line(tmp_path: Path) -> None:
    code, stdout, stderr = lwdock("spec", "fit", tmp_path / "nope.csv", "-o", "s.json", "--json",
                                  home=tmp_path)  # fmt: skip
    assert code == EXIT_INVALID
    assert "INVALID_ARGUMENT" in stderr and "no such file" in stderr
    assert last_json(stdout)["error"]["code"] == "INVALID_ARGUMENT"

    code, _, stderr = lwdock("spec", "fit", home=tmp_path)
    assert code == EXIT_USAGE and "usage:" in stderr

    # Nothing listens there: UNAVAILABLE after the deadline, exit 6, no traceback.
    port = free_port()
    code, stdout, stderr = lwdock(
        "status", "lw-00000001", "--registry-address", f"127.0.0.1:{port}",
        "--timeout", "1", "--json", home=tmp_path,
    )  # fmt: skip
    assert code == EXIT_UNAVAILABLE, stderr
    assert "Traceback" not in stderr
    assert last_json(stdout)["error"]["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_pack_a_pickled_model_checked_against_its_semantic(tmp_path: Path) -> None:
    X = np.load(DIGITS) / 16.0
    y = np.load(FIXTURES / "digits_classes0to4_first100_pred.npy")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(X, y)))
    np.save(tmp_path / "x.npy", X)
    code, _, stderr = lwdock("spec", "fit", tmp_path / "x.npy", "-o", tmp_path / "spec.json",
                             home=tmp_path)  # fmt: skip
    assert code == EXIT_OK, stderr

    package = tmp_path / "lw.zip"
    code, stdout, stderr = lwdock(
        "pack", tmp_path / "model.pkl", "-o", package, "--spec", tmp_path / "spec.json",
        "--semantic", SEMANTIC, "--output-shape", "1", "--json", home=tmp_path,
    )  # fmt: skip
    assert code == EXIT_OK, stderr
    result = last_json(stdout)
    assert result["checked"] is True
    assert sorted(result["files"]) == sorted(
        ["learnware.yaml", "__init__.py", "model.pkl", "stat_spec.json", "requirements.txt"]
    )
    semantic = Semantic.from_reference_dict(json.loads(SEMANTIC.read_text()))
    check_package(package.read_bytes(), semantic)

    # Declared input (32,) against Input.Dimension 64: refused before anything is written.
    code, stdout, stderr = lwdock(
        "pack", tmp_path / "model.pkl", "-o", tmp_path / "bad.zip", "--spec",
        tmp_path / "spec.json", "--semantic", SEMANTIC, "--input-shape", "32", "--json",
        home=tmp_path,
    )  # fmt: skip
    assert code == EXIT_INVALID
    assert "model.kwargs.input_shape" in stderr
    fields = [v["field"] for v in last_json(stdout)["error"]["field_violations"]]
    assert any(f.endswith("model.kwargs.input_shape") for f in fields)
    assert not (tmp_path / "bad.zip").exists()
