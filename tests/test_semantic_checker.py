"""The semantic checker: the reference's rules, Beimingwu's limits, 0.3 and 0.4 specs."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lwdock.common.v1 import semantic_pb2
from lwdock.errors import InvalidArgument
from lwdock.semantic.checker import (
    DEFAULT_LICENSE,
    Features,
    Semantic,
    check_semantic,
    semantic_violations,
)
from tests.conftest import FIXTURES


def reference_spec() -> dict[str, Any]:
    return json.loads((FIXTURES / "learnware_digits_svc.semantic.json").read_text())


def valid() -> Semantic:
    return Semantic(
        data_type="Table",
        task="Classification",
        library="Scikit-learn",
        scenarios=("Education",),
        license="MIT",
        name="digits-svc",
        description="An SVC for handwritten digits.",
        input=Features(4, {0: "a", 3: "d"}),
        output=Features(2, {0: "no", 1: "yes"}),
    )


def fields(sem: Semantic) -> dict[str, str]:
    return {v.field: v.description for v in semantic_violations(sem)}


def rejected(sem: Semantic) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        check_semantic(sem)
    return {v.field: v.description for v in info.value.violations}


def json_rejected(data: object) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        Semantic.from_reference_dict(data)
    return {v.field: v.description for v in info.value.violations}


def replace(sem: Semantic, **changes: Any) -> Semantic:
    from dataclasses import replace as dc_replace

    return dc_replace(sem, **changes)


# --- the reference fixture and both reference versions ----------------------------------------


def test_reference_fixture_accepted_unchanged() -> None:
    data = reference_spec()
    before = copy.deepcopy(data)
    sem = Semantic.from_reference_dict(data)
    assert data == before
    assert sem.data_type == "Table" and sem.task == "Classification"
    assert sem.library == "Scikit-learn" and sem.scenarios == ("Education",)
    assert sem.license == "MIT" and sem.name == "digits-svc-0to4"
    assert sem.input is not None and sem.input.dimension == 64 and len(sem.input.descriptions) == 64
    assert sem.output == Features(5, {i: f"digit {i}" for i in range(5)})
    assert sem.model == ""  # 0.3 style: no Model key


def test_04_style_with_model_accepted() -> None:
    data = reference_spec()
    data["Model"] = {"Type": "Optional", "Values": ["Others"]}
    assert Semantic.from_reference_dict(data).model == "Others"


def test_export_writes_model_and_license_and_reads_back() -> None:
    sem = replace(valid(), license="")
    out = sem.to_reference_dict()
    assert out["Model"] == {"Type": "Optional", "Values": ["Others"]}
    assert out["License"] == {"Type": "Class", "Values": [DEFAULT_LICENSE]}
    assert out["Input"] == {"Dimension": 4, "Description": {"0": "a", "3": "d"}}
    assert out["Name"] == {"Type": "String", "Values": "digits-svc"}
    back = Semantic.from_reference_dict(json.loads(json.dumps(out)))
    assert back == replace(sem, license=DEFAULT_LICENSE, model="Others")


def test_reference_fixture_round_trips_through_export() -> None:
    sem = Semantic.from_reference_dict(reference_spec())
    assert Semantic.from_reference_dict(sem.to_reference_dict()) == replace(sem, model="Others")


def test_proto_round_trip() -> None:
    sem = Semantic.from_reference_dict(reference_spec())
    msg = sem.to_proto()
    assert isinstance(msg, semantic_pb2.SemanticSpecification)
    assert msg.input.descriptions[63] == "pixel 7,7" and msg.output.dimension == 5
    assert Semantic.from_proto(msg) == sem
    parsed = semantic_pb2.SemanticSpecification.FromString(msg.SerializeToString())
    assert Semantic.from_proto(parsed) == sem


def test_proto_absent_input_stays_absent() -> None:
    sem = replace(valid(), data_type="Image", input=None)
    back = Semantic.from_proto(sem.to_proto())
    assert back.input is None and back.output is not None


def test_missing_license_is_required_unless_market_default() -> None:
    data = reference_spec()
    del data["License"]
    assert "semantic_specification.license" in json_rejected(data)
    sem = Semantic.from_reference_dict(data, default_license=True)
    assert sem.license == DEFAULT_LICENSE


def test_unknown_keys_ignored() -> None:
    data = reference_spec()
    data["learnware_id"] = {"Type": "String", "Values": "0001"}
    Semantic.from_reference_dict(data)


# --- vocabulary rules ---------------------------------------------------------------------


def test_valid_passes() -> None:
    check_semantic(valid())


@pytest.mark.parametrize(
    ("field", "value"),
    [("data_type", "Tabular"), ("task", "Ranking"), ("library", "JAX"), ("license", "WTFPL")],
)
def test_class_value_must_be_in_vocabulary(field: str, value: str) -> None:
    got = rejected(replace(valid(), **{field: value}))
    assert list(got) == [f"semantic_specification.{field}"]
    assert value in got[f"semantic_specification.{field}"]


@pytest.mark.parametrize("field", ["data_type", "task", "library", "license"])
def test_class_value_required(field: str) -> None:
    assert (
        "required" in rejected(replace(valid(), **{field: ""}))[f"semantic_specification.{field}"]
    )


def test_class_takes_exactly_one_value_in_json() -> None:
    data = reference_spec()
    data["Library"]["Values"] = ["Scikit-learn", "PyTorch"]
    assert "exactly one" in json_rejected(data)["semantic_specification.library"]


def test_tag_needs_one_or_more_allowed_values() -> None:
    assert (
        "at least one"
        in rejected(replace(valid(), scenarios=()))["semantic_specification.scenarios"]
    )
    got = rejected(replace(valid(), scenarios=("Business", "Space")))
    assert list(got) == ["semantic_specification.scenarios[1]"]
    check_semantic(replace(valid(), scenarios=("Business", "Health", "Others")))


@pytest.mark.parametrize(
    ("data", "task", "ok"),
    [
        ("Table", "Segmentation", False),
        ("Table", "Object Detection", False),
        ("Table", "Text Generation", False),
        ("Table", "Feature Extraction", True),
        ("Image", "Segmentation", True),
        ("Image", "Text Generation", False),
        ("Text", "Text Generation", True),
        ("Text", "Object Detection", False),
    ],
)
def test_task_allowed_per_data_type(data: str, task: str, ok: bool) -> None:
    sem = replace(valid(), data_type=data, task=task, output=None)
    got = fields(sem)
    assert ("semantic_specification.task" not in got) is ok


# --- Name / Description lengths (Beimingwu) --------------------------------------------------


@pytest.mark.parametrize(("length", "ok"), [(4, False), (5, True), (50, True), (51, False)])
def test_name_5_to_50_characters(length: int, ok: bool) -> None:
    got = fields(replace(valid(), name="n" * length))
    assert ("semantic_specification.name" not in got) is ok


@pytest.mark.parametrize(
    ("length", "ok"), [(9, False), (10, True), (10_000, True), (10_001, False)]
)
def test_description_10_to_10000_characters(length: int, ok: bool) -> None:
    got = fields(replace(valid(), description="d" * length))
    assert ("semantic_specification.description" not in got) is ok


# --- Model (0.4, optional) ----------------------------------------------------------------


def test_model_absent_or_others_accepted() -> None:
    check_semantic(replace(valid(), model=""))
    check_semantic(replace(valid(), model="Others"))


def test_model_value_must_be_allowed() -> None:
    assert "semantic_specification.model" in rejected(replace(valid(), model="Giant Model"))


def test_model_other_than_others_rejected_for_table_and_image() -> None:
    assert (
        "Others" in rejected(replace(valid(), model="Base Model"))["semantic_specification.model"]
    )
    text = replace(valid(), data_type="Text", input=None, model="Fine-tuned Model")
    check_semantic(text)


def test_model_present_needs_one_value() -> None:
    data = reference_spec()
    data["Model"] = {"Type": "Optional", "Values": []}
    assert "semantic_specification.model" in json_rejected(data)
    data["Model"] = {"Type": "Optional", "Values": "Others"}
    assert "must be a list" in json_rejected(data)["semantic_specification.model"]


# --- Input / Output ---------------------------------------------------------------------


def test_input_required_for_table() -> None:
    got = rejected(replace(valid(), input=None))
    assert "required for Table" in got["semantic_specification.input"]
    check_semantic(replace(valid(), data_type="Image", input=None))


def test_input_dimension_at_least_one_for_table() -> None:
    got = rejected(replace(valid(), input=Features(0)))
    assert list(got) == ["semantic_specification.input.dimension"]


def test_description_keys_within_dimension() -> None:
    got = rejected(replace(valid(), input=Features(64, {0: "a", 70: "x", -1: "y"})))
    assert set(got) == {
        "semantic_specification.input.descriptions[70]",
        "semantic_specification.input.descriptions[-1]",
    }
    got = rejected(replace(valid(), output=Features(2, {2: "c"})))
    assert list(got) == ["semantic_specification.output.descriptions[2]"]


def test_not_every_index_needs_a_description() -> None:
    check_semantic(replace(valid(), input=Features(100, {})))


def test_output_required_for_classification_and_regression() -> None:
    assert "semantic_specification.output" in rejected(replace(valid(), output=None))
    assert "semantic_specification.output" in rejected(
        replace(valid(), task="Regression", output=None)
    )
    check_semantic(replace(valid(), task="Feature Extraction", output=None))
    check_semantic(replace(valid(), task="Others", output=None))


def test_classification_output_dimension_above_one_regression_one_ok() -> None:
    got = rejected(replace(valid(), output=Features(1)))
    assert list(got) == ["semantic_specification.output.dimension"]
    check_semantic(replace(valid(), task="Regression", output=Features(1)))
    assert "semantic_specification.output.dimension" in rejected(
        replace(valid(), task="Regression", output=Features(0))
    )


# --- every violation at once; malformed JSON is a violation, not a crash ----------------------


def test_all_violations_in_one_error() -> None:
    sem = replace(valid(), data_type="Tabular", name="abc", description="short", scenarios=())
    got = rejected(sem)
    assert set(got) == {
        "semantic_specification.data_type",
        "semantic_specification.name",
        "semantic_specification.description",
        "semantic_specification.scenarios",
    }


def test_custom_prefix() -> None:
    got = {v.field for v in semantic_violations(replace(valid(), name=""), prefix="learnware.x")}
    assert got == {"learnware.x.name"}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.__setitem__("Data", {"Type": "Class", "Values": "Table"}), "data_type"),
        (lambda d: d.__setitem__("Data", ["Table"]), "data_type"),
        (lambda d: d["Task"].__setitem__("Type", "Tag"), "task"),
        (lambda d: d["Library"].pop("Values"), "library"),
        (lambda d: d["Scenario"].__setitem__("Values", [1, 2]), "scenarios"),
        (lambda d: d["Scenario"].__setitem__("Values", "Education"), "scenarios"),
        (lambda d: d["Name"].__setitem__("Values", ["digits"]), "name"),
        (lambda d: d["Description"].__setitem__("Values", None), "description"),
        (lambda d: d.__setitem__("Input", [64]), "input"),
        (lambda d: d["Input"].__setitem__("Dimension", "64"), "input.dimension"),
        (lambda d: d["Input"].__setitem__("Dimension", True), "input.dimension"),
        (lambda d: d["Input"].__setitem__("Description", ["a"]), "input.descriptions"),
        (lambda d: d["Input"]["Description"].__setitem__("x", "a"), "input.descriptions[x]"),
        (lambda d: d["Output"]["Description"].__setitem__("0", 5), "output.descriptions[0]"),
    ],
)
def test_malformed_json_shapes_are_violations(mutate: Any, field: str) -> None:
    data = reference_spec()
    mutate(data)
    assert f"semantic_specification.{field}" in json_rejected(data)


@pytest.mark.parametrize("data", [None, [], "Table", 3])
def test_not_an_object(data: object) -> None:
    assert list(json_rejected(data)) == ["semantic_specification"]


def test_parse_without_check_keeps_problems_for_later() -> None:
    data = reference_spec()
    data["Data"]["Values"] = "Table"
    sem = Semantic.from_reference_dict(data, check=False)
    assert sem.data_type == ""
    assert "semantic_specification.data_type" in rejected(sem)


def test_description_missing_reads_as_empty() -> None:
    data = reference_spec()
    del data["Input"]["Description"]
    sem = Semantic.from_reference_dict(data)
    assert sem.input == Features(64, {})
