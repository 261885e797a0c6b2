"""The `lwdock` CLI as a subprocess, for what needs no server: `spec fit` on .csv / .npy /
.parquet, `pack`, and the script contract (`--json` last line, exit codes, errors on stderr)
including an unreachable service."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import time
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

    # An output that cannot be written: a local file problem, exit 3 with the error object.
    code, stdout, stderr = lwdock(
        "pack", tmp_path / "model.pkl", "-o", tmp_path / "missing" / "lw.zip", "--spec",
        tmp_path / "spec.json", "--output-shape", "1", "--json", home=tmp_path,
    )  # fmt: skip
    assert code == EXIT_INVALID, stderr
    assert "Traceback" not in stderr
    assert last_json(stdout)["error"]["reason"] == "LOCAL_FILE"


def test_local_file_and_value_errors_exit_3_with_the_json_error(tmp_path: Path) -> None:
    """An output that cannot be written (OSError) or data that cannot be decoded (ValueError)
    is a local input problem: exit 3 and the error object, never a traceback."""
    X = np.load(FIXTURES / "table_a_d10.npy")[:60]
    np.save(tmp_path / "x.npy", X)
    target = tmp_path / "missing" / "spec.json"
    code, stdout, stderr = lwdock("spec", "fit", tmp_path / "x.npy", "-o", target, "--k", "5",
                                  "--json", home=tmp_path)  # fmt: skip
    assert code == EXIT_INVALID, stderr
    assert "Traceback" not in stderr
    error = last_json(stdout)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "LOCAL_FILE")
    assert error["field_violations"] == [
        {"field": str(target), "description": "No such file or directory"}
    ]

    # A .npy read as texts: a UnicodeDecodeError (ValueError).
    code, stdout, stderr = lwdock("spec", "fit", tmp_path / "x.npy", "-o", tmp_path / "t.json",
                                  "--type", "text", "--json", home=tmp_path)  # fmt: skip
    assert code == EXIT_INVALID, stderr
    assert "Traceback" not in stderr
    error = last_json(stdout)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "LOCAL_INPUT")


def test_token_create_and_demo_errors_give_the_json_error(tmp_path: Path) -> None:
    # No database: a usage error (2), with the error object under --json.
    code, stdout, stderr = lwdock("token", "create", "--principal", "users/a", "--role",
                                  "reader", "--json", home=tmp_path)  # fmt: skip
    assert code == EXIT_USAGE, stderr
    assert last_json(stdout)["error"]["field_violations"][0]["field"] == "--database-url"

    # A bad principal is refused before any connection: INVALID_ARGUMENT, 3.
    code, stdout, stderr = lwdock(
        "token", "create", "--principal", "", "--role", "reader", "--database-url",
        f"postgresql://127.0.0.1:{free_port()}/none", "--json", home=tmp_path,
    )  # fmt: skip
    assert code == EXIT_INVALID, stderr
    assert last_json(stdout)["error"]["field_violations"][0]["field"] == "principal"

    # The suite is not running: exit 6 and the error object.
    addresses = [
        arg
        for name in ("spec", "registry", "search", "reuse")
        for arg in (f"--{name}-address", f"127.0.0.1:{free_port()}")
    ]
    code, stdout, stderr = lwdock("demo", "--ready-timeout", "1", *addresses, "--json",
                                  home=tmp_path)  # fmt: skip
    assert code == EXIT_UNAVAILABLE, stderr
    error = last_json(stdout)["error"]
    assert (error["code"], error["reason"]) == ("UNAVAILABLE", "SUITE_NOT_SERVING")


def test_timeout_bounds_uploads_and_predictions(tmp_path: Path) -> None:
    """`--timeout` is the deadline of every call, the long ones (upload, Predict) included:
    against a server that accepts and never answers, `--timeout 1` ends in DEADLINE_EXCEEDED
    within seconds (not the 600 s transfer default, nor gRPC's 20 s connect timeout)."""
    np.save(tmp_path / "x.npy", np.zeros((4, 64)))
    (tmp_path / "lw.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody speaks HTTP/2
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        connection = ["--registry-address", address, "--reuse-address", address, "--token", ""]
        for command in (
            ["reuse", "--learnware", "lw-00000001", "--input", tmp_path / "x.npy",
             "--output", tmp_path / "y.npy"],
            ["submit", tmp_path / "lw.zip", "--semantic", SEMANTIC],
        ):  # fmt: skip
            started = time.monotonic()
            code, stdout, stderr = lwdock(*command, *connection, "--timeout", "1", "--json",
                                          home=tmp_path)  # fmt: skip
            elapsed = time.monotonic() - started
            assert code == EXIT_UNAVAILABLE, stderr
            assert last_json(stdout)["error"]["code"] == "DEADLINE_EXCEEDED", command[0]
            assert elapsed < 15, (command[0], elapsed)
