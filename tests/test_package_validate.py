"""validate_package: packages made here in memory, and the reference fixture unchanged."""

from __future__ import annotations

import importlib
import io
import json
import stat
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lwdock.errors import InvalidArgument, ResourceExhausted
from lwdock.package import ValidatedPackage, ZipLimits, validate_package
from lwdock.semantic.checker import Features, Semantic
from tests.conftest import FIXTURES

MANIFEST = "package.learnware.yaml"
KWARGS = f"{MANIFEST}.model.kwargs"

YAML = """\
model:
  class_name: MyModel
  kwargs:
    input_shape: !!python/tuple
    - {dim}
    output_shape: !!python/tuple
    - 2
stat_specifications:
- class_name: {cls}
  file_name: stat.json
  kwargs: {{}}
  module_path: learnware.specification
"""


def spec_json(k: int = 5, d: int = 4, **extra: object) -> bytes:
    rng = np.random.default_rng(0)
    data: dict[str, object] = {
        "z": rng.normal(size=(k, d)).tolist(),
        "beta": [1.0 / k] * k,
        "gamma": 0.1,
        "num_points": 50,
        "type": "RKMETableSpecification",
    }
    data.update(extra)
    return json.dumps(data).encode()


def files(
    *, dim: int = 4, cls: str = "RKMETableSpecification", yaml: str | None = None
) -> dict[str, bytes]:
    return {
        "learnware.yaml": (yaml if yaml is not None else YAML.format(dim=dim, cls=cls)).encode(),
        "__init__.py": b"raise SystemExit('model code must never run in the registry')\n",
        "stat.json": spec_json(d=dim),
        "requirements.txt": b"# deps\nscikit-learn==1.9.1  # pinned\n\nnumpy\n",
    }


def make_zip(entries: dict[str, bytes], wrap: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if wrap:
            zf.writestr(f"{wrap}/", b"")
        for name, data in entries.items():
            zf.writestr(f"{wrap}/{name}" if wrap else name, data)
    return buf.getvalue()


def semantic(dim: int = 4, **changes: object) -> Semantic:
    base = Semantic(
        data_type="Table",
        task="Classification",
        library="Scikit-learn",
        scenarios=("Business",),
        license="MIT",
        name="a test learnware",
        description="A learnware made by the tests.",
        input=Features(dim),
        output=Features(2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def rejected(data: bytes, sem: Semantic | None = None) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_package(data, sem or semantic())
    return {v.field: v.description for v in info.value.violations}


# --- valid packages -------------------------------------------------------------------------


def test_reference_fixture_validates_unchanged() -> None:
    path = FIXTURES / "learnware_digits_svc.zip"
    sem_path = FIXTURES / "learnware_digits_svc.semantic.json"
    before = (path.read_bytes(), sem_path.read_bytes())
    sem = Semantic.from_reference_dict(json.loads(sem_path.read_text()))
    pkg = validate_package(path.read_bytes(), sem)
    assert isinstance(pkg, ValidatedPackage)
    assert pkg.input_shape == (64,) and pkg.output_shape == (5,)
    spec = pkg.stat_specs["RKMETableSpecification"]
    assert spec.z.shape == (100, 64) and spec.beta.shape == (100,)
    assert pkg.stat_spec_for("Table") is spec
    assert pkg.stat_spec_files == {"RKMETableSpecification": "stat_spec.json"}
    assert pkg.requirements == ("scikit-learn==1.9.1",)
    assert pkg.requirements_file == "requirements.txt"
    assert pkg.manifest.model.class_name == "PickleLoadedModel"
    assert set(pkg.members) >= {"learnware.yaml", "__init__.py", "model.pkl", "stat_spec.json"}
    assert pkg.root_folder is None
    assert validate_package(path, sem).stat_specs.keys() == pkg.stat_specs.keys()  # from a path
    assert (path.read_bytes(), sem_path.read_bytes()) == before


def test_reference_fixture_folder_wrapped_accepted() -> None:
    with zipfile.ZipFile(FIXTURES / "learnware_digits_svc.zip") as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    sem = Semantic.from_reference_dict(
        json.loads((FIXTURES / "learnware_digits_svc.semantic.json").read_text())
    )
    pkg = validate_package(make_zip(entries, wrap="digits-svc"), sem)
    assert pkg.root_folder == "digits-svc"
    assert pkg.stat_specs["RKMETableSpecification"].z.shape == (100, 64)


def test_made_package_validates() -> None:
    pkg = validate_package(make_zip(files()), semantic())
    assert pkg.input_shape == (4,) and pkg.output_shape == (2,)
    assert pkg.requirements == ("scikit-learn==1.9.1", "numpy")
    assert pkg.stat_specs["RKMETableSpecification"].z.shape == (5, 4)


def test_legacy_alias_class_name_accepted() -> None:
    pkg = validate_package(make_zip(files(cls="RKMEStatSpecification")), semantic())
    assert "RKMETableSpecification" in pkg.stat_specs


def test_0_4_style_semantic_accepted() -> None:
    validate_package(make_zip(files()), semantic(model="Others"))


def test_environment_yaml_wins_over_requirements_txt() -> None:
    entries = files()
    entries["environment.yaml"] = (
        b"name: env\ndependencies:\n- python=3.8\n- pip\n- pip:\n  - torch==2.0\n"
    )
    pkg = validate_package(make_zip(entries), semantic())
    assert pkg.requirements_file == "environment.yaml"
    assert pkg.requirements == ("python=3.8", "pip", "torch==2.0")


# --- module_path is never imported ------------------------------------------------------------


def test_module_path_elsewhere_is_fine_but_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported.txt"
    module = "lwdock_test_import_probe"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    yaml = (
        f"model: {{class_name: MyModel, module_path: {module}, kwargs: {{}}}}\n"
        "stat_specifications:\n"
        f"- {{module_path: {module}, class_name: RKMETableSpecification, file_name: stat.json,"
        " kwargs: {}}\n"
    )
    pkg = validate_package(make_zip(files(yaml=yaml)), semantic())
    assert pkg.manifest.stat_specifications[0].module_path == module
    assert pkg.manifest.model.module_path == module
    assert not marker.exists() and module not in sys.modules
    importlib.import_module(module)  # the probe works: importing it does write the marker
    assert marker.exists()


# --- broken packages ----------------------------------------------------------------------


def test_missing_learnware_yaml() -> None:
    entries = files()
    del entries["learnware.yaml"]
    assert "required" in rejected(make_zip(entries))[MANIFEST]


def test_yaml_with_python_object_tag(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    entries = files()
    entries["learnware.yaml"] = (
        f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    ).encode()
    assert "not allowed" in rejected(make_zip(entries))[MANIFEST]
    assert not marker.exists()


def test_yaml_not_a_mapping() -> None:
    assert "mapping" in rejected(make_zip(files(yaml="- model\n- stat\n")))[MANIFEST]


def test_stat_spec_file_missing() -> None:
    entries = files()
    del entries["stat.json"]
    got = rejected(make_zip(entries))
    assert list(got) == [f"{MANIFEST}.stat_specifications[0].file_name"]
    assert "not in the package" in got[f"{MANIFEST}.stat_specifications[0].file_name"]


def test_corrupt_stat_spec_member_is_a_violation() -> None:
    data = bytearray(make_zip(files()))
    # Flip a byte of stat.json's CRC in its central directory header.
    at = data.find(b"stat.json", data.find(b"PK\x01\x02"))
    header = data.rfind(b"PK\x01\x02", 0, at)
    data[header + 16] ^= 0xFF
    got = rejected(bytes(data))
    assert "corrupt" in got["package.stat.json"]


def test_no_stat_specifications() -> None:
    yaml = "model: {class_name: MyModel}\nstat_specifications: []\n"
    got = rejected(make_zip(files(yaml=yaml)))
    assert "required" in got[f"{MANIFEST}.stat_specifications"]


def test_unknown_class_name() -> None:
    got = rejected(make_zip(files(cls="GenerativeModelSpecification")))
    assert "is not one of" in got[f"{MANIFEST}.stat_specifications[0].class_name"]


def test_stat_spec_with_nan() -> None:
    entries = files()
    entries["stat.json"] = spec_json(gamma=float("nan"))
    assert b"NaN" in entries["stat.json"]
    assert "must be > 0" in rejected(make_zip(entries))["package.stat.json.gamma"]


def test_stat_spec_with_nan_in_z() -> None:
    entries = files()
    data = json.loads(spec_json())
    data["z"][0][0] = float("nan")
    entries["stat.json"] = json.dumps(data).encode()  # json writes NaN
    got = rejected(make_zip(entries))
    assert list(got) == ["package.stat.json.z"] and "NaN" in got["package.stat.json.z"]


def test_stat_spec_wrong_dimension() -> None:
    entries = files()
    entries["stat.json"] = spec_json(d=10)
    got = rejected(make_zip(entries))
    assert "dimension 10" in got["semantic_specification.input.dimension"]


@pytest.mark.parametrize(
    "text",
    [b"not json", b"[1, 2]", b'{"beta": [1.0]}', b'{"z": [[1, "x"]], "beta": [1]}', b"[" * 5000],
)
def test_stat_spec_unparsable(text: bytes) -> None:
    entries = files()
    entries["stat.json"] = text
    got = rejected(make_zip(entries))
    assert any(f.startswith("package.stat.json") for f in got)


def test_stat_spec_bad_gamma_is_a_violation_not_a_crash() -> None:
    entries = files()
    entries["stat.json"] = spec_json(gamma="wide")
    assert any(f.startswith("package.stat.json") for f in rejected(make_zip(entries)))


def test_stat_spec_type_must_match_class_name() -> None:
    entries = files(cls="RKMETextSpecification")
    got = rejected(make_zip(entries))
    assert "RKMETableSpecification but the entry names" in got["package.stat.json.type"]


def test_stat_spec_type_must_match_data() -> None:
    got = rejected(make_zip(files()), semantic(data_type="Image", input=None))
    assert "needs RKMEImageSpecification" in got["package.stat.json.type"]
    assert "needs an RKMEImageSpecification" in got[f"{MANIFEST}.stat_specifications"]


def test_text_spec_for_text_data() -> None:
    entries = files(cls="RKMETextSpecification")
    entries["stat.json"] = spec_json(d=8, type="RKMETextSpecification", language=["en"])
    entries["learnware.yaml"] = entries["learnware.yaml"].replace(b"- 4", b"- 1")
    sem = semantic(data_type="Text", input=None)
    pkg = validate_package(make_zip(entries), sem)
    assert pkg.stat_specs["RKMETextSpecification"].language == ["en"]
    assert pkg.stat_spec_for("Text") is pkg.stat_specs["RKMETextSpecification"]


def test_input_shape_as_list_is_a_clear_violation() -> None:
    yaml = YAML.format(dim=4, cls="RKMETableSpecification").replace(
        "input_shape: !!python/tuple\n    - 4", "input_shape: [4]"
    )
    assert "input_shape: [4]" in yaml
    got = rejected(make_zip(files(yaml=yaml)))
    assert "is a list [4]" in got[f"{KWARGS}.input_shape"]
    assert "!!python/tuple" in got[f"{KWARGS}.input_shape"]


def test_input_shape_must_equal_input_dimension() -> None:
    entries = files()
    entries["learnware.yaml"] = entries["learnware.yaml"].replace(b"- 4", b"- 5")
    got = rejected(make_zip(entries))
    assert "(5,)" in got[f"{KWARGS}.input_shape"] and "(4,)" in got[f"{KWARGS}.input_shape"]


def test_input_shape_none_rejected_for_table() -> None:
    yaml = YAML.format(dim=4, cls="RKMETableSpecification").replace(
        "input_shape: !!python/tuple\n    - 4", "input_shape: null"
    )
    assert "input_shape: null" in yaml
    assert "None" in rejected(make_zip(files(yaml=yaml)))[f"{KWARGS}.input_shape"]


def test_output_shape_checked_against_output_dimension() -> None:
    entries = files()
    entries["learnware.yaml"] = entries["learnware.yaml"].replace(b"- 2", b"- 3")
    assert "Output.Dimension" in rejected(make_zip(entries))[f"{KWARGS}.output_shape"]
    entries["learnware.yaml"] = entries["learnware.yaml"].replace(b"- 3", b"- 1")
    validate_package(make_zip(entries), semantic())  # labels: (1,)
    got = rejected(make_zip(entries), semantic(task="Regression", output=Features(2)))
    assert "Output.Dimension is 2" in got[f"{KWARGS}.output_shape"]


def test_hostile_zip_and_semantic_problems_in_one_error() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files().items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("model.pkl")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("../evil", b"x")
    got = rejected(buf.getvalue(), semantic(name="abc"))
    assert set(got) == {"semantic_specification.name", "package.model.pkl", "package"}


def test_package_and_semantic_problems_in_one_error() -> None:
    entries = files()
    entries["stat.json"] = spec_json(d=10)
    got = rejected(make_zip(entries), semantic(scenarios=(), license="Proprietary"))
    assert {
        "semantic_specification.scenarios",
        "semantic_specification.license",
        "semantic_specification.input.dimension",
    } <= set(got)


def test_semantic_check_can_be_skipped() -> None:
    validate_package(make_zip(files()), semantic(name="abc"), check_semantic_spec=False)


def test_oversized_package_is_resource_exhausted() -> None:
    data = make_zip(files())
    with pytest.raises(ResourceExhausted):
        validate_package(data, semantic(), limits=ZipLimits(max_archive_bytes=len(data) - 1))
    with pytest.raises(ResourceExhausted):
        validate_package(data, semantic(), limits=ZipLimits(max_total_bytes=100))
