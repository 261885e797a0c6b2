"""learnware.yaml: the restricted loader and the manifest's shape."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from lwdock.errors import InvalidArgument
from lwdock.package.manifest import (
    DEFAULT_STAT_SPECIFICATIONS,
    RestrictedLoader,
    YamlRefused,
    load_yaml,
    parse_manifest,
)
from tests.conftest import FIXTURES

FILES = {"__init__.py", "stat_spec.json", "stat.json", "model.py", "sub/spec.json"}


def problems(text: str, members: set[str] | None = FILES) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        parse_manifest(text.encode(), members=members)
    return {v.field: v.description for v in info.value.violations}


# --- the loader ---------------------------------------------------------------------------


def test_python_tuple_becomes_a_tuple() -> None:
    doc = load_yaml("shape: !!python/tuple\n- 64\n- 3\nempty: !!python/tuple []\n")
    assert doc == {"shape": (64, 3), "empty": ()}
    assert isinstance(doc["shape"], tuple)


def test_nested_python_tuple() -> None:
    assert load_yaml("a: !!python/tuple [[1, 2], !!python/tuple [3]]") == {"a": ([1, 2], (3,))}


def test_python_tuple_on_a_mapping_refused() -> None:
    with pytest.raises(YamlRefused):
        load_yaml("a: !!python/tuple {x: 1}")


def test_object_apply_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f'model: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(YamlRefused, match="python/object/apply"):
        load_yaml(text)
    got = problems(text)
    assert "python/object/apply:os.system is not allowed" in got["package.learnware.yaml"]
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/name:os.system ''",
        "a: !!python/module:os ''",
        "a: !!python/object:collections.OrderedDict {}",
        "a: !!python/object/new:os.system [echo]",
        "a: !!python/list [1]",
        "a: !!python/dict {}",
        "a: !!python/bytes aGVsbG8=",
        "a: !<tag:yaml.org,2002:python/object/apply:subprocess.call> [[ls]]",
        "a: !custom 1",
    ],
)
def test_other_python_and_unknown_tags_refused(text: str) -> None:
    with pytest.raises(YamlRefused):
        load_yaml(text)


def test_safe_loader_itself_is_not_changed() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("a: !!python/tuple [1]")
    assert RestrictedLoader is not yaml.SafeLoader


def test_alias_bomb_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(YamlRefused, match="alias bomb"):
        load_yaml("\n".join(lines))


def test_recursive_alias_refused() -> None:
    with pytest.raises(YamlRefused, match="itself"):
        load_yaml("a: &a [1, *a]")


def test_shared_alias_is_fine() -> None:
    # yaml.dump writes an anchor when input and output shape are the same object.
    doc = load_yaml("i: &id001 !!python/tuple [8]\no: *id001\n")
    assert doc == {"i": (8,), "o": (8,)}


def test_not_utf8_and_bad_syntax() -> None:
    with pytest.raises(YamlRefused, match="UTF-8"):
        load_yaml(b"a: \xff\xfe\xfa")
    with pytest.raises(YamlRefused, match="YAML"):
        load_yaml("a: [1, 2\nb: }")


# --- the manifest -------------------------------------------------------------------------


def test_reference_fixture_manifest() -> None:
    with zipfile.ZipFile(FIXTURES / "learnware_digits_svc.zip") as zf:
        text = zf.read("learnware.yaml")
        names = set(zf.namelist())
    m = parse_manifest(text, members=names)
    assert m.model.class_name == "PickleLoadedModel"
    assert m.model.module_path == "__init__.py" and m.model.module_file == "__init__.py"
    assert m.model.kwargs["input_shape"] == (64,) and m.model.kwargs["output_shape"] == (5,)
    assert len(m.stat_specifications) == 1
    spec = m.stat_specifications[0]
    assert (spec.class_name, spec.file_name, spec.module_path) == (
        "RKMETableSpecification",
        "stat_spec.json",
        "learnware.specification",
    )
    assert spec.spec_type is not None and spec.spec_type.value == "RKMETableSpecification"
    assert not m.stat_specifications_defaulted


def test_empty_yaml_gets_03_defaults() -> None:
    m = parse_manifest(b"", members=FILES)
    assert (m.model.class_name, m.model.module_path, m.model.kwargs) == ("Model", "__init__.py", {})
    assert m.stat_specifications_defaulted
    assert [s.file_name for s in m.stat_specifications] == ["stat_spec.json"]
    assert DEFAULT_STAT_SPECIFICATIONS[0]["file_name"] == "stat_spec.json"


def test_model_merged_key_by_key_and_04_keys_kept() -> None:
    m = parse_manifest(
        b"model:\n  kwargs: {a: 1}\n  weights_file_path: weights\n  required_learnware_ids: []\n",
        members=FILES,
    )
    assert m.model.class_name == "Model" and m.model.kwargs == {"a": 1}
    assert m.model.extra == {"weights_file_path": "weights", "required_learnware_ids": []}


def test_stat_specifications_list_replaces_default() -> None:
    text = (
        "stat_specifications:\n"
        "- {module_path: learnware.specification, class_name: RKMEStatSpecification,\n"
        "   file_name: ./sub/spec.json, kwargs: {}}\n"
    )
    m = parse_manifest(text.encode(), members=FILES)
    assert [s.file_name for s in m.stat_specifications] == ["sub/spec.json"]
    assert m.stat_specifications[0].spec_type is not None


def test_beimingwu_keys() -> None:
    m = parse_manifest(
        b"id: '00000123'\nname: x\nsemantic_specification: {file_name: semantic.json}\n",
        members=FILES,
    )
    assert m.id == "00000123" and m.name == "x"
    assert m.semantic_specification_file == "semantic.json"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_not_a_mapping(text: str) -> None:
    got = problems(text)
    assert "must be a mapping" in got["package.learnware.yaml"]


def test_unknown_class_name_rejected() -> None:
    text = (
        "stat_specifications:\n"
        "- {module_path: os, class_name: makedirs, file_name: stat.json, kwargs: {name: x}}\n"
    )
    got = problems(text)
    assert (
        "'makedirs' is not one of"
        in got["package.learnware.yaml.stat_specifications[0].class_name"]
    )


def test_stat_spec_entry_needs_all_four_keys() -> None:
    got = problems("stat_specifications:\n- {class_name: RKMETableSpecification}\n")
    assert set(got) == {
        "package.learnware.yaml.stat_specifications[0].module_path",
        "package.learnware.yaml.stat_specifications[0].file_name",
        "package.learnware.yaml.stat_specifications[0].kwargs",
    }


@pytest.mark.parametrize(
    ("file_name", "why"),
    [("/etc/passwd", "absolute"), ("../stat.json", "'..'"), ("missing.json", "not in the package")],
)
def test_stat_spec_file_name_relative_and_present(file_name: str, why: str) -> None:
    text = (
        "stat_specifications:\n"
        "- module_path: learnware.specification\n"
        "  class_name: RKMETableSpecification\n"
        f"  file_name: {file_name}\n"
        "  kwargs: {}\n"
    )
    assert why in problems(text)["package.learnware.yaml.stat_specifications[0].file_name"]


def test_default_stat_spec_file_must_exist() -> None:
    got = problems("", members={"__init__.py"})
    assert (
        "'stat_spec.json' is not in the package"
        in got["package.learnware.yaml.stat_specifications[0].file_name"]
    )


def test_stat_specifications_must_be_a_list() -> None:
    got = problems("stat_specifications: {class_name: RKMETableSpecification}\n")
    assert "must be a list" in got["package.learnware.yaml.stat_specifications"]


def test_model_shape_problems() -> None:
    got = problems("model:\n  class_name: 'os.system'\n  module_path: ../x.py\n  kwargs: [1]\n")
    assert set(got) == {
        "package.learnware.yaml.model.class_name",
        "package.learnware.yaml.model.module_path",
        "package.learnware.yaml.model.kwargs",
    }


def test_model_module_file_must_exist() -> None:
    got = problems("model: {module_path: other.py}\n")
    assert "not in the package" in got["package.learnware.yaml.model.module_path"]
    m = parse_manifest(b"model: {module_path: model.py}\n", members=FILES)
    assert m.model.module_file == "model.py"


def test_model_module_by_name_recorded_not_imported() -> None:
    m = parse_manifest(b"model: {module_path: some.installed.module}\n", members=FILES)
    assert m.model.module_path == "some.installed.module" and m.model.module_file is None
    assert "some" not in sys.modules
