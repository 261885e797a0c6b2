"""Validate an uploaded learnware package against its semantic specification, as data only.

Checks (REFERENCE.md §1, §2.2, §8.2 static parts, §12.1 S1/S7): a safe zip (`zipsafe`), a
restricted `learnware.yaml` (`manifest`), every stat-spec file parsed as RKME JSON (finite,
well-shaped, its `type` matching the entry's class), at least one stat spec, the spec type
matching `Data` (Table <-> RKMETableSpecification with Input.Dimension == z.shape[1], Image <->
RKMEImageSpecification, Text <-> RKMETextSpecification), and the model's declared
`input_shape` / `output_shape` kwargs (tuples of ints, as the reference's tuple-equality check
needs) against the semantic spec. Nothing in the package is imported or executed.

All problems, including the semantic spec's own, are raised as ONE InvalidArgument; limit
breaches raise ResourceExhausted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lwdock.errors import FieldViolation, InvalidArgument
from lwdock.package.manifest import (
    MANIFEST_FIELD,
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    Manifest,
    YamlRefused,
    load_yaml,
    manifest_violations,
)
from lwdock.package.zipsafe import FIELD, SafeZip, ZipLimits, ZipMember, open_zip
from lwdock.package.zipsafe import raise_violations as _raise
from lwdock.rkme.spec import RKMESpec, SpecType
from lwdock.semantic.checker import FIELD as SEMANTIC_FIELD
from lwdock.semantic.checker import Semantic, semantic_violations


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING = _Sentinel("<missing>")
_INVALID = _Sentinel("<invalid>")

_Bad = Callable[[str, str], None]

# The reference caps K*D at 1,310,720 values; as JSON text that is well under 64 MiB.
MAX_STAT_SPEC_BYTES = 64 * 1024**2
MAX_REQUIREMENTS_BYTES = 1024**2
REQUIREMENTS_FILES = ("environment.yaml", "requirements.txt")  # the first present wins

SPEC_FOR_DATA: dict[str, SpecType] = {
    "Table": SpecType.TABLE,
    "Image": SpecType.IMAGE,
    "Text": SpecType.TEXT,
}


@dataclass(frozen=True)
class ValidatedPackage:
    """What the registry needs from a valid package.

    stat_specs: parsed RKME specs keyed by their JSON `type` (a SpecType value such as
    "RKMETableSpecification"); stat_spec_files: the same keys -> file in the package.
    input_shape / output_shape: the model's declared kwargs (tuples of ints, or None when not
    declared or declared None). requirements: the lines of `environment.yaml` (conda and pip
    dependencies) or `requirements.txt`, from `requirements_file`.
    """

    members: dict[str, ZipMember]
    root_folder: str | None
    manifest: Manifest
    stat_specs: dict[str, RKMESpec]
    stat_spec_files: dict[str, str]
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    requirements: tuple[str, ...]
    requirements_file: str | None
    archive_size: int
    uncompressed_size: int
    # HeteroMapTableSpecification entries: allowed, not parsed as RKME (file names).
    other_spec_files: tuple[str, ...] = field(default=())

    def stat_spec_for(self, data_type: str) -> RKMESpec | None:
        spec_type = SPEC_FOR_DATA.get(data_type)
        return None if spec_type is None else self.stat_specs.get(spec_type.value)


def validate_package(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    semantic: Semantic,
    *,
    limits: ZipLimits | None = None,
    check_semantic_spec: bool = True,
) -> ValidatedPackage:
    """Validate the zip (bytes or a path) with its semantic spec; see the module docstring.

    check_semantic_spec: include the semantic checker's violations (default) in the one
    InvalidArgument; pass False if the caller has checked it already."""
    problems: list[FieldViolation] = []
    if check_semantic_spec:
        problems.extend(semantic_violations(semantic))
    try:
        archive = open_zip(source, limits)
    except InvalidArgument as exc:
        _raise(problems + exc.violations, "invalid learnware package")
        raise
    with archive:
        result = _validate(archive, semantic, problems)
    _raise(problems, "invalid learnware package")
    assert result is not None
    return result


def _validate(
    archive: SafeZip, semantic: Semantic, problems: list[FieldViolation]
) -> ValidatedPackage | None:
    def bad(path: str, description: str) -> None:
        problems.append(FieldViolation(path, description))

    requirements, requirements_file = _requirements(archive, bad, problems)
    if MANIFEST_FILE not in archive:
        bad(MANIFEST_FIELD, "required at the package root")
        return None
    manifest_text = _read(archive, MANIFEST_FILE, MAX_MANIFEST_BYTES, problems)
    if manifest_text is None:
        return None
    manifest, manifest_problems = manifest_violations(manifest_text, members=archive.members)
    problems.extend(manifest_problems)
    if manifest is None:
        return None

    specs: dict[str, RKMESpec] = {}
    files: dict[str, str] = {}
    others: list[str] = []
    for i, entry in enumerate(manifest.stat_specifications):
        expected = entry.spec_type
        where = f"{FIELD}.{entry.file_name}"
        text = _read(archive, entry.file_name, MAX_STAT_SPEC_BYTES, problems)
        if text is None:
            continue
        if expected is None:
            others.append(entry.file_name)
            _check_json_object(text, where, bad)
            continue
        spec = _parse_spec(text, where, bad)
        if spec is None:
            continue
        if spec.type is not expected:
            bad(f"{where}.type", f"is {spec.type.value} but the entry names {entry.class_name}")
        elif spec.type.value in specs:
            bad(
                f"{MANIFEST_FIELD}.stat_specifications[{i}]",
                f"a second {spec.type.value} ({files[spec.type.value]!r} is the first)",
            )
        else:
            specs[spec.type.value] = spec
            files[spec.type.value] = entry.file_name

    entries_field = f"{MANIFEST_FIELD}.stat_specifications"
    if not manifest.stat_specifications and not any(
        p.field.startswith(entries_field) for p in manifest_problems
    ):
        bad(entries_field, "a statistical specification is required")
    _check_against_semantic(semantic, specs, files, manifest, bad)
    # Text models may declare anything as input_shape: the reference never compares it.
    input_shape = _declared_shape(manifest, "input_shape", bad, strict=semantic.data_type != "Text")
    output_shape = _declared_shape(manifest, "output_shape", bad, strict=True)
    _check_shapes(semantic, manifest, input_shape, output_shape, bad)
    return ValidatedPackage(
        members=dict(archive.members),
        root_folder=archive.root_folder,
        manifest=manifest,
        stat_specs=specs,
        stat_spec_files=files,
        input_shape=input_shape if isinstance(input_shape, tuple) else None,
        output_shape=output_shape if isinstance(output_shape, tuple) else None,
        requirements=requirements,
        requirements_file=requirements_file,
        archive_size=archive.archive_size,
        uncompressed_size=archive.uncompressed_size,
        other_spec_files=tuple(others),
    )


def _read(
    archive: SafeZip, name: str, max_bytes: int, problems: list[FieldViolation]
) -> bytes | None:
    """A member's bytes; a corrupt member becomes a violation. ResourceExhausted if larger
    than max_bytes."""
    try:
        return archive.read(name, max_bytes=max_bytes)
    except InvalidArgument as exc:
        problems.extend(exc.violations)
        return None


def _parse_spec(text: bytes, where: str, bad: _Bad) -> RKMESpec | None:
    try:
        return RKMESpec.from_reference_json(text, prefix=f"{where}.")
    except InvalidArgument as exc:
        for v in exc.violations or [FieldViolation(where, exc.message)]:
            bad(v.field, v.description)
    except (TypeError, ValueError, OverflowError, RecursionError, AttributeError) as exc:
        bad(where, f"not a valid statistical specification: {exc}")
    return None


def _check_json_object(text: bytes, where: str, bad: _Bad) -> None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        bad(where, f"not JSON: {exc}")
        return
    if not isinstance(value, dict):
        bad(where, "expected a JSON object")


def _check_against_semantic(
    semantic: Semantic,
    specs: dict[str, RKMESpec],
    files: dict[str, str],
    manifest: Manifest,
    bad: _Bad,
) -> None:
    wanted = SPEC_FOR_DATA.get(semantic.data_type)
    if wanted is None or not manifest.stat_specifications:
        return
    for type_name, file_name in files.items():
        if type_name != wanted.value:
            bad(
                f"{FIELD}.{file_name}.type",
                f"is {type_name} but Data is {semantic.data_type} (needs {wanted.value})",
            )
    spec = specs.get(wanted.value)
    declared = {entry.spec_type for entry in manifest.stat_specifications}
    if spec is None and wanted in declared:
        return  # the entry's own problem is reported already
    if spec is None:
        found = ", ".join(specs) or "none that parsed"
        bad(
            f"{MANIFEST_FIELD}.stat_specifications",
            f"Data is {semantic.data_type}: needs an {wanted.value} (found {found})",
        )
        return
    if wanted is SpecType.TABLE:
        where = f"{FIELD}.{files[wanted.value]}.z"
        if spec.z.ndim != 2:
            bad(where, f"a table spec needs z of shape [K, d], got {spec.z.shape}")
        elif semantic.input is not None and semantic.input.dimension != spec.z.shape[1]:
            bad(
                f"{SEMANTIC_FIELD}.input.dimension",
                f"is {semantic.input.dimension} but the statistical specification "
                f"{files[wanted.value]!r} has dimension {spec.z.shape[1]} (z.shape[1])",
            )


_SHAPE_HINT = "write it as a tuple (YAML `!!python/tuple`)"


def _declared_shape(manifest: Manifest, key: str, bad: _Bad, *, strict: bool) -> Any:
    """The declared kwargs value: a tuple of ints, None, or `_MISSING` / `_INVALID` (reported
    only when `strict`)."""
    kwargs = manifest.model.kwargs
    if key not in kwargs:
        return _MISSING
    value = kwargs[key]
    where = f"{MANIFEST_FIELD}.model.kwargs.{key}"
    if value is None:
        return None
    if isinstance(value, list):
        if not strict:
            return _INVALID
        bad(
            where,
            f"is a list {value!r}; the reference compares shapes with tuple equality, so a "
            f"list never matches and the learnware is rejected: {_SHAPE_HINT}",
        )
        return _INVALID
    if not isinstance(value, tuple) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    ):
        if not strict:
            return _INVALID
        bad(where, f"must be a tuple of non-negative ints, got {value!r}: {_SHAPE_HINT}")
        return _INVALID
    return value


def _check_shapes(
    semantic: Semantic, manifest: Manifest, input_shape: Any, output_shape: Any, bad: _Bad
) -> None:
    kwargs_field = f"{MANIFEST_FIELD}.model.kwargs"
    if semantic.data_type == "Table" and semantic.input is not None:
        want = (semantic.input.dimension,)
        if input_shape is None:
            bad(f"{kwargs_field}.input_shape", f"is None; a Table learnware needs {want}")
        elif isinstance(input_shape, tuple) and input_shape != want:
            bad(
                f"{kwargs_field}.input_shape",
                f"is {input_shape} but the semantic specification's Input.Dimension gives {want}",
            )
    if not isinstance(output_shape, tuple) or semantic.output is None:
        return
    if semantic.task not in ("Classification", "Regression"):
        return
    where = f"{kwargs_field}.output_shape"
    dim = semantic.output.dimension
    if not output_shape:
        bad(where, f"must not be empty for a {semantic.task} task")
    elif semantic.task == "Regression" and output_shape[0] != dim:
        bad(where, f"is {output_shape} but Output.Dimension is {dim}")
    elif semantic.task == "Classification" and output_shape[0] not in (1, dim):
        bad(
            where,
            f"is {output_shape}; a classifier declares (1,) (labels) or ({dim},) "
            f"(one score per class, Output.Dimension)",
        )


def _requirements(
    archive: SafeZip, bad: _Bad, problems: list[FieldViolation]
) -> tuple[tuple[str, ...], str | None]:
    for name in REQUIREMENTS_FILES:
        if name in archive:
            data = _read(archive, name, MAX_REQUIREMENTS_BYTES, problems)
            where = f"{FIELD}.{name}"
            if data is None:
                return (), name
            if name == "requirements.txt":
                return _requirements_txt(data, where, bad), name
            return _environment_yaml(data, where, bad), name
    return (), None


def _requirements_txt(data: bytes, where: str, bad: _Bad) -> tuple[str, ...]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad(where, f"not UTF-8: {exc}")
        return ()
    lines = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return tuple(lines)


def _environment_yaml(data: bytes, where: str, bad: _Bad) -> tuple[str, ...]:
    try:
        doc = load_yaml(data)
    except YamlRefused as exc:
        bad(where, str(exc))
        return ()
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if doc is not None and not isinstance(doc, dict):
        bad(where, "must be a mapping")
    if deps is None:
        return ()
    if not isinstance(deps, list):
        bad(f"{where}.dependencies", "must be a list")
        return ()
    out: list[str] = []
    for dep in deps:
        if isinstance(dep, str):
            out.append(dep)
        elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            out.extend(str(p) for p in dep["pip"])
        else:
            bad(f"{where}.dependencies", f"unexpected entry {dep!r}")
    return tuple(out)
