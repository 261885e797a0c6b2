"""SDK parts that need no server: local RKME fits from every input form, packing in the
reference's layout (validated by the registry's own code), semantic queries, strategies,
token resolution, and decoding a server's google.rpc.Status into typed errors."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from lwdock.client import (
    Strategy,
    fit_images,
    fit_table,
    fit_texts,
    load_spec,
    pack_folder,
    pack_model,
    read_table,
    save_spec,
    semantic,
)
from lwdock.client.aio import error_from_status, semantic_query
from lwdock.client.config import resolve_token
from lwdock.client.errors import rpc_status
from lwdock.errors import FieldViolation, InvalidArgument, NotFound
from lwdock.package.manifest import parse_manifest
from lwdock.package.pack import check_package
from lwdock.rkme.fit import fit_table_rkme
from lwdock.rkme.spec import RKMESpec
from lwdock.semantic.checker import Semantic
from lwdock.server.status import to_status_proto
from tests.conftest import FIXTURES

TABLE = np.load(FIXTURES / "table_small_d3.npy")


def _same(left: RKMESpec, right: RKMESpec) -> None:
    np.testing.assert_array_equal(left.z, right.z)
    np.testing.assert_array_equal(left.beta, right.beta)
    assert left.num_points == right.num_points


def test_fit_table_reads_arrays_frames_and_files_alike(tmp_path: Path) -> None:
    direct = fit_table_rkme(TABLE, reduced_set_size=20, seed=3)
    frame = pd.DataFrame(TABLE, columns=["a", "b", "c"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", TABLE)
    for source in (TABLE, frame, tmp_path / "t.csv", tmp_path / "t.parquet", tmp_path / "t.npy"):
        _same(fit_table(source, reduced_set_size=20, seed=3), direct)

    save_spec(direct, tmp_path / "spec.json")
    saved = json.loads((tmp_path / "spec.json").read_text())
    assert saved["type"] == "RKMETableSpecification"
    assert list(saved)[:4] == ["z", "beta", "gamma", "num_points"]
    _same(load_spec(tmp_path / "spec.json"), direct)


def test_bad_tables_are_field_violations(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]}).to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(InvalidArgument) as caught:
        read_table(tmp_path / "mixed.csv")
    assert caught.value.violations[0].field == str(tmp_path / "mixed.csv")
    assert "label" in caught.value.violations[0].description
    with pytest.raises(InvalidArgument, match="unsupported file type"):
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(InvalidArgument, match="no such file"):
        read_table(tmp_path / "missing.npy")


def _digits_model() -> tuple[LogisticRegression, RKMESpec, Semantic]:
    X = np.load(FIXTURES / "digits_classes0to4_first100.npy") / 16.0
    y = np.load(FIXTURES / "digits_classes0to4_first100_pred.npy")
    model = LogisticRegression(max_iter=500).fit(X, y)
    sem = semantic(
        name="digits-lr-0to4",
        description="A logistic regression on digits 0 to 4",
        input_dimension=64,
        output_dimension=5,
    )
    return model, fit_table(X, reduced_set_size=20), sem


def test_pack_model_writes_the_reference_layout_deterministically() -> None:
    model, spec, sem = _digits_model()
    data = pack_model(model, spec, input_shape=64, output_shape=1)
    assert data == pack_model(model, spec, input_shape=64, output_shape=1)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
        reference = zipfile.ZipFile(FIXTURES / "learnware_digits_svc.zip")
        assert set(files) == set(reference.namelist())
        assert files["__init__.py"] == reference.read("__init__.py")  # the template itself
    yaml_text = files["learnware.yaml"].decode()
    assert "input_shape: !!python/tuple" in yaml_text
    manifest = parse_manifest(files["learnware.yaml"], members=set(files))
    assert manifest.model.kwargs["input_shape"] == (64,)
    assert manifest.model.kwargs["output_shape"] == (1,)
    assert manifest.stat_specifications[0].file_name == "stat_spec.json"
    assert files["requirements.txt"].decode().startswith("scikit-learn==")

    validated = check_package(data, sem)
    assert validated.stat_spec_for("Table") is not None


def test_check_package_lists_what_the_registry_would_refuse() -> None:
    model, spec, _ = _digits_model()
    wrong = semantic(name="x", description="short", input_dimension=32, output_dimension=5)
    with pytest.raises(InvalidArgument) as caught:
        check_package(pack_model(model, spec, input_shape=64, output_shape=1), wrong)
    fields = {v.field for v in caught.value.violations}
    assert "semantic_specification.name" in fields
    assert any(f.endswith("model.kwargs.input_shape") for f in fields)


def test_pack_folder_zips_a_learnware_folder(tmp_path: Path) -> None:
    with zipfile.ZipFile(FIXTURES / "learnware_digits_svc.zip") as archive:
        archive.extractall(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    data = pack_folder(tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "__pycache__/x.cpython-311.pyc" not in archive.namelist()
    fixture_semantic = json.loads((FIXTURES / "learnware_digits_svc.semantic.json").read_text())
    check_package(data, Semantic.from_reference_dict(fixture_semantic))
    with pytest.raises(InvalidArgument, match=r"no learnware\.yaml"):
        pack_folder(tmp_path / "__pycache__")


def test_semantic_query_from_the_reference_user_json() -> None:
    query = semantic_query(
        {
            "Data": {"Values": ["Table"], "Type": "Class"},
            "Task": {"Values": ["Classification", "Regression"], "Type": "Class"},
            "Scenario": {"Values": ["Education"], "Type": "Tag"},
            "Library": {"Values": [], "Type": "Class"},
            "Name": {"Values": "digits", "Type": "String"},
            "Description": {"Values": "", "Type": "String"},
            "learnware_id": {"Values": "lw-0001", "Type": "String"},
        }
    )
    assert list(query.data_types) == ["Table"]
    assert list(query.tasks) == ["Classification", "Regression"]
    assert list(query.scenarios) == ["Education"]
    assert list(query.libraries) == [] and list(query.licenses) == []
    assert (query.text, query.learnware_id) == ("digits", "lw-0001")


def test_strategies_by_name() -> None:
    assert Strategy.parse("job_selector") is Strategy.JOB_SELECTOR
    assert Strategy.parse("average") is Strategy.AVERAGE_MEAN
    assert Strategy.parse("REUSE_STRATEGY_VOTE_BY_PROBABILITY") is Strategy.VOTE_BY_PROBABILITY
    assert Strategy.from_proto(Strategy.FEATURE_AUGMENT.to_proto()) is Strategy.FEATURE_AUGMENT
    with pytest.raises(ValueError, match="unknown strategy"):
        Strategy.parse("best")


def test_token_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "admin.token").write_text("from-home\n")
    monkeypatch.delenv("LWDOCK_TOKEN", raising=False)
    assert resolve_token(None, tmp_path) == "from-home"
    monkeypatch.setenv("LWDOCK_TOKEN", "from-env")
    assert resolve_token(None, tmp_path) == "from-env"
    assert resolve_token("explicit", tmp_path) == "explicit"
    assert resolve_token("", tmp_path) is None  # anonymous on purpose
    monkeypatch.delenv("LWDOCK_TOKEN")
    assert resolve_token(None, tmp_path / "empty") is None


def test_a_servers_status_becomes_the_typed_error_with_its_violations() -> None:
    sent = InvalidArgument.of(
        [FieldViolation("semantic_specification.name", "too short"), FieldViolation("x", "bad")]
    )
    received = error_from_status(to_status_proto(sent, "lwdock.registry"), "registry")
    assert isinstance(received, InvalidArgument)
    assert received.violations == sent.violations
    status = rpc_status(received)
    assert status is not None
    assert (status.code, status.service, status.reason) == (
        "INVALID_ARGUMENT",
        "registry",
        "INVALID_ARGUMENT",
    )
    assert "semantic_specification.name: too short" in status.describe()

    gone = error_from_status(
        to_status_proto(NotFound("Learnware", "learnwares/lw-9"), "lwdock.registry")
    )
    assert isinstance(gone, NotFound) and gone.resource_name == "learnwares/lw-9"


def test_images_and_texts_fit_locally_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 3, 32, 32)).astype(np.uint8)
    image_spec = fit_images(images, reduced_set_size=3, steps=1)
    assert image_spec.type.value == "RKMEImageSpecification"
    assert image_spec.z.shape == (3, 3, 32, 32)
    save_spec(image_spec, tmp_path / "image.json")
    loaded = load_spec(tmp_path / "image.json")
    np.testing.assert_allclose(loaded.z, image_spec.z)
    assert loaded.image_kernel == image_spec.image_kernel

    texts = ["the cat sat on the mat", "stocks fell sharply today", "rain is due tomorrow"] * 3
    text_spec = fit_texts(texts, reduced_set_size=3)
    assert (text_spec.type.value, text_spec.language) == ("RKMETextSpecification", ["en"])
    assert text_spec.num_points == 9 and text_spec.z.shape[1] == 384
