"""The semantic specification in our domain form, its converters and its checker.

REFERENCE.md §2 (format, vocabulary, `EasySemanticChecker`, Beimingwu's upload rules) and §1.6
(0.4's `Model` key and per-Data Task sets). Field paths in violations use the proto's field
names under a prefix (`semantic_specification.name`, `semantic_specification.input.
descriptions[70]`) whichever form the spec arrived in; a malformed reference JSON shape is a
violation like any other, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lwdock.common.v1 import semantic_pb2
from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.semantic.vocabulary import VOCABULARY

FIELD = "semantic_specification"

NAME_MIN_CHARS, NAME_MAX_CHARS = 5, 50
DESCRIPTION_MIN_CHARS, DESCRIPTION_MAX_CHARS = 10, 10_000
# A stored spec without `License` gets this on the reference market's load (§2.1).
DEFAULT_LICENSE = "Apache-2.0"
# What 0.4 writes for non-LLM learnwares, and what it requires for Table and Image (§1.6).
DEFAULT_MODEL = "Others"

_ALLOWED: dict[str, tuple[str, ...]] = {k.key: k.values for k in VOCABULARY}
_TYPES: dict[str, str] = {k.key: k.type for k in VOCABULARY}

# 0.4's Task restriction per Data type (§1.6).
TASKS_BY_DATA: dict[str, frozenset[str]] = {
    "Table": frozenset({"Classification", "Regression", "Feature Extraction", "Others"}),
    "Image": frozenset(
        {
            "Classification",
            "Regression",
            "Feature Extraction",
            "Segmentation",
            "Object Detection",
            "Others",
        }
    ),
    "Text": frozenset(
        {"Classification", "Regression", "Feature Extraction", "Text Generation", "Others"}
    ),
}
# 0.4 reads `Model` unconditionally for these and requires `Others`.
_MODEL_OTHERS_ONLY = frozenset({"Table", "Image"})

# reference key -> (our field name, reference Type); Input/Output have no Type.
_CLASS_KEYS = {"Data": "data_type", "Task": "task", "Library": "library", "License": "license"}
_STRING_KEYS = {"Name": "name", "Description": "description"}


@dataclass(frozen=True)
class Features:
    """`Input` / `Output`: a dimension and optional text per index (0 <= index < dimension)."""

    dimension: int
    descriptions: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Semantic:
    """A semantic specification. Empty strings mean "absent" (`model == ""`: no `Model` key).

    `problems` holds the shape violations found while converting from the reference JSON;
    `check_semantic` reports them with the rule violations.
    """

    data_type: str = ""
    task: str = ""
    library: str = ""
    scenarios: tuple[str, ...] = ()
    license: str = ""
    name: str = ""
    description: str = ""
    input: Features | None = None
    output: Features | None = None
    model: str = ""
    problems: tuple[FieldViolation, ...] = field(default=(), compare=False, repr=False)

    # --- the reference JSON -------------------------------------------------------------

    @classmethod
    def from_reference_dict(
        cls,
        data: object,
        *,
        check: bool = True,
        default_license: bool = False,
        prefix: str = FIELD,
    ) -> Semantic:
        """Read the reference's `{key: {"Type": ..., "Values": ...}}` form.

        check: run `check_semantic` (raises one InvalidArgument listing shape and rule
        violations); with False, shape problems are kept in `problems` for a later check.
        default_license: a missing `License` reads as Apache-2.0 (the reference market's load
        rule for stored specs); otherwise it is a violation, as in the reference checker.
        Unknown keys (e.g. search's `learnware_id`) are ignored.
        """
        sem = _from_reference(data, default_license, prefix)
        if check:
            check_semantic(sem, prefix=prefix)
        return sem

    def to_reference_dict(self) -> dict[str, Any]:
        """The reference JSON form, accepted by both 0.3 and 0.4: `Model` is always written
        (`Others` when absent) and `License` defaults to Apache-2.0."""

        def one(value: str) -> list[str]:
            return [value] if value else []

        out: dict[str, Any] = {
            "Data": {"Type": "Class", "Values": one(self.data_type)},
            "Task": {"Type": "Class", "Values": one(self.task)},
            "Library": {"Type": "Class", "Values": one(self.library)},
            "Scenario": {"Type": "Tag", "Values": list(self.scenarios)},
            "License": {"Type": "Class", "Values": [self.license or DEFAULT_LICENSE]},
            "Description": {"Type": "String", "Values": self.description},
            "Name": {"Type": "String", "Values": self.name},
            "Model": {"Type": "Optional", "Values": [self.model or DEFAULT_MODEL]},
        }
        for key, feats in (("Input", self.input), ("Output", self.output)):
            if feats is not None:
                out[key] = {
                    "Dimension": feats.dimension,
                    "Description": {str(k): v for k, v in sorted(feats.descriptions.items())},
                }
        return out

    # --- the proto message -------------------------------------------------------------

    @classmethod
    def from_proto(cls, msg: semantic_pb2.SemanticSpecification) -> Semantic:
        def feats(name: str) -> Features | None:
            if not msg.HasField(name):
                return None
            fd = getattr(msg, name)
            return Features(fd.dimension, dict(fd.descriptions))

        return cls(
            data_type=msg.data_type,
            task=msg.task,
            library=msg.library,
            scenarios=tuple(msg.scenarios),
            license=msg.license,
            name=msg.name,
            description=msg.description,
            input=feats("input"),
            output=feats("output"),
            model=msg.model,
        )

    def to_proto(self) -> semantic_pb2.SemanticSpecification:
        msg = semantic_pb2.SemanticSpecification(
            data_type=self.data_type,
            task=self.task,
            library=self.library,
            scenarios=list(self.scenarios),
            license=self.license,
            name=self.name,
            description=self.description,
            model=self.model,
        )
        for name, feats in (("input", self.input), ("output", self.output)):
            if feats is not None:
                getattr(msg, name).CopyFrom(
                    semantic_pb2.FeatureDescription(
                        dimension=feats.dimension, descriptions=feats.descriptions
                    )
                )
        return msg


# --- reading the reference JSON --------------------------------------------------------------


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def _entry(
    data: Mapping[str, object], key: str, path: str, problems: list[FieldViolation]
) -> object:
    """The `Values` of `data[key]` after checking the entry's shape and `Type`; `_ABSENT` if
    the key is absent (or null) or the entry is malformed (then a problem is recorded)."""
    entry = data.get(key)
    if entry is None:
        return _ABSENT
    if not isinstance(entry, Mapping):
        problems.append(FieldViolation(path, f"`{key}` must be an object with Type and Values"))
        return _ABSENT
    expected = _TYPES[key]
    if entry.get("Type") != expected:
        problems.append(
            FieldViolation(
                path, f"`{key}.Type` must be {expected!r}, got {_describe(entry.get('Type'))}"
            )
        )
        return _ABSENT
    if "Values" not in entry:
        problems.append(FieldViolation(path, f"`{key}.Values` is required"))
        return _ABSENT
    return entry["Values"]


def _string_list(
    values: object, key: str, path: str, problems: list[FieldViolation]
) -> list[str] | None:
    if not isinstance(values, list):
        problems.append(
            FieldViolation(path, f"`{key}.Values` must be a list, got {_describe(values)}")
        )
        return None
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        problems.append(
            FieldViolation(path, f"`{key}.Values` must hold strings, got {_describe(bad[0])}")
        )
        return None
    return values


def _one_value(
    data: Mapping[str, object], key: str, path: str, problems: list[FieldViolation]
) -> str:
    """A Class (or present Optional) key's single value; "" when absent or malformed."""
    raw = _entry(data, key, path, problems)
    if raw is _ABSENT:
        return ""
    values = _string_list(raw, key, path, problems)
    if values is None:
        return ""
    if len(values) > 1 or (not values and _TYPES[key] == "Optional"):
        problems.append(FieldViolation(path, f"`{key}` takes exactly one value, got {len(values)}"))
        return ""
    return values[0] if values else ""


def _features(raw: object, key: str, path: str, problems: list[FieldViolation]) -> Features | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(FieldViolation(path, f"`{key}` must be an object with Dimension"))
        return None
    dim = raw.get("Dimension")
    if isinstance(dim, bool) or not isinstance(dim, int):
        problems.append(
            FieldViolation(
                f"{path}.dimension", f"`{key}.Dimension` must be an integer, got {_describe(dim)}"
            )
        )
        return None
    desc = raw.get("Description")
    if desc is None:
        desc = {}
    if not isinstance(desc, Mapping):
        problems.append(
            FieldViolation(
                f"{path}.descriptions",
                f"`{key}.Description` must be an object {{index: text}}, got {_describe(desc)}",
            )
        )
        return Features(dim)
    out: dict[int, str] = {}
    for k, v in desc.items():
        index = _index(k)
        where = f"{path}.descriptions[{k}]"
        if index is None:
            problems.append(FieldViolation(where, "key must be a feature index (an integer)"))
        elif not isinstance(v, str):
            problems.append(FieldViolation(where, f"must be a string, got {_describe(v)}"))
        elif index in out:
            problems.append(FieldViolation(where, "index given twice"))
        else:
            out[index] = v
    return Features(dim, out)


def _index(key: object) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str):
        text = key.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    return None


def _from_reference(data: object, default_license: bool, prefix: str) -> Semantic:
    problems: list[FieldViolation] = []
    if not isinstance(data, Mapping):
        problems.append(FieldViolation(prefix, f"must be a JSON object, got {_describe(data)}"))
        return Semantic(problems=tuple(problems))
    values: dict[str, Any] = {}
    for key, name in _CLASS_KEYS.items():
        values[name] = _one_value(data, key, f"{prefix}.{name}", problems)
    if "License" not in data and default_license:
        values["license"] = DEFAULT_LICENSE
    for key, name in _STRING_KEYS.items():
        raw = _entry(data, key, f"{prefix}.{name}", problems)
        if raw is _ABSENT:
            values[name] = ""
        elif isinstance(raw, str):
            values[name] = raw
        else:
            problems.append(
                FieldViolation(
                    f"{prefix}.{name}", f"`{key}.Values` must be a string, got {_describe(raw)}"
                )
            )
            values[name] = ""
    raw = _entry(data, "Scenario", f"{prefix}.scenarios", problems)
    scenarios = (
        None if raw is _ABSENT else _string_list(raw, "Scenario", f"{prefix}.scenarios", problems)
    )
    values["scenarios"] = tuple(scenarios or ())
    values["model"] = _one_value(data, "Model", f"{prefix}.model", problems)
    values["input"] = _features(data.get("Input"), "Input", f"{prefix}.input", problems)
    values["output"] = _features(data.get("Output"), "Output", f"{prefix}.output", problems)
    return Semantic(**values, problems=tuple(problems))


# --- the checker -----------------------------------------------------------------------------


def semantic_violations(sem: Semantic, *, prefix: str = FIELD) -> list[FieldViolation]:
    """Every violation of the reference checker's rules plus Beimingwu's upload rules."""
    out: list[FieldViolation] = list(sem.problems)
    flagged = {p.field for p in sem.problems}
    if prefix in flagged:  # not an object at all: the rules below would only add noise
        return out

    def add(name: str, description: str) -> None:
        out.append(FieldViolation(f"{prefix}.{name}", description))

    def one_of(name: str, key: str, value: str) -> bool:
        if f"{prefix}.{name}" in flagged:
            return False
        allowed = _ALLOWED[key]
        if not value:
            add(name, f"required; one of {', '.join(allowed)}")
            return False
        if value not in allowed:
            add(name, f"{value!r} is not one of {', '.join(allowed)}")
            return False
        return True

    data_ok = one_of("data_type", "Data", sem.data_type)
    task_ok = one_of("task", "Task", sem.task)
    one_of("library", "Library", sem.library)
    one_of("license", "License", sem.license)
    if data_ok and task_ok and sem.task not in TASKS_BY_DATA[sem.data_type]:
        allowed = ", ".join(sorted(TASKS_BY_DATA[sem.data_type]))
        add("task", f"{sem.task!r} is not a task for {sem.data_type} data; one of {allowed}")

    if f"{prefix}.scenarios" not in flagged:
        if not sem.scenarios:
            add("scenarios", f"at least one; from {', '.join(_ALLOWED['Scenario'])}")
        for i, scenario in enumerate(sem.scenarios):
            if scenario not in _ALLOWED["Scenario"]:
                add(f"scenarios[{i}]", f"{scenario!r} is not one of the Scenario values")

    for name, low, high in (
        ("name", NAME_MIN_CHARS, NAME_MAX_CHARS),
        ("description", DESCRIPTION_MIN_CHARS, DESCRIPTION_MAX_CHARS),
    ):
        value = getattr(sem, name)
        if f"{prefix}.{name}" not in flagged and not low <= len(value) <= high:
            add(name, f"must be {low} to {high:,} characters, got {len(value):,}")

    if sem.model and f"{prefix}.model" not in flagged:
        if sem.model not in _ALLOWED["Model"]:
            add("model", f"{sem.model!r} is not one of {', '.join(_ALLOWED['Model'])}")
        elif data_ok and sem.data_type in _MODEL_OTHERS_ONLY and sem.model != DEFAULT_MODEL:
            add("model", f"must be {DEFAULT_MODEL!r} (or absent) for {sem.data_type} data")

    _check_features(
        sem.input,
        f"{prefix}.input",
        required=sem.data_type == "Table",
        why="Table data",
        min_dim=1,
        flagged=flagged,
        out=out,
    )
    needs_output = sem.task in ("Classification", "Regression")
    _check_features(
        sem.output,
        f"{prefix}.output",
        required=needs_output,
        why=f"a {sem.task} task",
        min_dim=2 if sem.task == "Classification" else 1,
        flagged=flagged,
        out=out,
    )
    return out


def _check_features(
    feats: Features | None,
    path: str,
    *,
    required: bool,
    why: str,
    min_dim: int,
    flagged: set[str],
    out: list[FieldViolation],
) -> None:
    if path in flagged or f"{path}.dimension" in flagged:
        return
    if feats is None:
        if required:
            out.append(FieldViolation(path, f"required for {why}"))
        return
    low = min_dim if required else 0
    if feats.dimension < low:
        out.append(
            FieldViolation(
                f"{path}.dimension",
                f"must be >= {low}"
                + (f" for {why}" if required else "")
                + f", got {feats.dimension}",
            )
        )
    for index in sorted(feats.descriptions):
        if not 0 <= index < feats.dimension:
            out.append(
                FieldViolation(
                    f"{path}.descriptions[{index}]",
                    f"index must be in [0, {feats.dimension}) (the dimension)",
                )
            )


def check_semantic(sem: Semantic, *, prefix: str = FIELD) -> None:
    """Raise one InvalidArgument listing every violation; return None when the spec is valid."""
    violations = semantic_violations(sem, prefix=prefix)
    if violations:
        raise InvalidArgument.of(violations, "invalid semantic specification")
