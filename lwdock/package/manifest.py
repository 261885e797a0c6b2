"""`learnware.yaml`: restricted YAML loading and the manifest's shape (REFERENCE.md §1.2, §12.1
S1/S7).

The loader is `SafeLoader` plus exactly one constructor, `!!python/tuple` -> tuple (the
reference's templates write shapes with it); every other `python/*` tag is refused, so
loading never imports or calls anything. Aliases are kept, but a document that expands to more
than MAX_NODES nodes (an alias bomb) or refers to itself is refused.

The YAML is merged over the reference defaults (0.3: `model` key by key, `stat_specifications`
replaced when given; 0.4's `weights_file_path` / `required_learnware_ids` kept as given).
`module_path`s are recorded and never imported; stat-spec `class_name`s come from an
allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import yaml

from lwdock.errors import FieldViolation
from lwdock.package.zipsafe import FIELD as PACKAGE_FIELD
from lwdock.package.zipsafe import normalize_name, raise_violations
from lwdock.rkme.spec import SpecType

MANIFEST_FILE = "learnware.yaml"
MANIFEST_FIELD = f"{PACKAGE_FIELD}.{MANIFEST_FILE}"
MAX_MANIFEST_BYTES = 1024**2
MAX_NODES = 100_000

TUPLE_TAG = "tag:yaml.org,2002:python/tuple"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"

# The classes a stat-spec entry may name, and the JSON type each one loads (None: not an RKME
# spec we parse; HeteroMap specs are made by the market, §6).
STAT_SPEC_CLASSES: dict[str, SpecType | None] = {
    "RKMETableSpecification": SpecType.TABLE,
    "RKMEStatSpecification": SpecType.TABLE,  # the legacy alias
    "RKMEImageSpecification": SpecType.IMAGE,
    "RKMETextSpecification": SpecType.TEXT,
    "HeteroMapTableSpecification": None,
}

DEFAULT_MODEL: dict[str, Any] = {"class_name": "Model", "module_path": "__init__.py", "kwargs": {}}
DEFAULT_STAT_SPECIFICATIONS: list[dict[str, Any]] = [
    {
        "module_path": "learnware.specification",
        "class_name": "RKMETableSpecification",
        "file_name": "stat_spec.json",
        "kwargs": {},
    }
]
_STAT_SPEC_KEYS = ("module_path", "class_name", "file_name", "kwargs")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


_Bad = Callable[[str, str], None]
_HasFile = Callable[[str], bool]


class RestrictedLoader(yaml.SafeLoader):
    """SafeLoader + `!!python/tuple`; any other `!!python/...` tag is a ConstructorError."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/tuple needs a sequence", node.start_mark
        )
    return tuple(loader.construct_sequence(node, deep=True))


def _refuse_python(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"tag !!python/{suffix} is not allowed (only !!python/tuple)", node.start_mark
    )


RestrictedLoader.add_constructor(TUPLE_TAG, _construct_tuple)
RestrictedLoader.add_multi_constructor(_PYTHON_TAG_PREFIX, _refuse_python)


class YamlRefused(ValueError):
    """The document is not acceptable YAML; the message says why."""


def load_yaml(data: bytes | str, *, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document with RestrictedLoader. Raises YamlRefused."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise YamlRefused(f"not UTF-8: {exc}") from None
    try:
        value = yaml.load(data, Loader=RestrictedLoader)
    except yaml.YAMLError as exc:
        raise YamlRefused(f"not acceptable YAML: {exc}") from None
    except RecursionError:
        raise YamlRefused("nested too deeply") from None
    _check_size(value, max_nodes)
    return value


def _check_size(value: Any, max_nodes: int) -> None:
    """Refuse documents whose expanded size (aliases counted at each use) passes max_nodes,
    and self-referencing ones. Linear in the number of distinct nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(obj: Any) -> int:
        if isinstance(obj, dict):
            children: list[Any] = [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set):
            children = list(obj)
        else:
            return 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlRefused("refers to itself (recursive alias)")
        active.add(key)
        total = 1
        for child in children:
            total += size(child)
            if total > max_nodes:
                raise YamlRefused(f"expands to more than {max_nodes:,} nodes (alias bomb?)")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        size(value)
    except RecursionError:
        raise YamlRefused("nested too deeply") from None


@dataclass(frozen=True)
class ModelConfig:
    """`model`: the class to instantiate in the sandbox, never here. `extra` holds other keys
    (0.4: `weights_file_path`, `required_learnware_ids`)."""

    class_name: str
    module_path: str
    kwargs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def module_file(self) -> str | None:
        """The package file holding the model class, or None for a module imported by name."""
        return self.module_path if self.module_path.endswith(".py") else None


@dataclass(frozen=True)
class StatSpecEntry:
    """One `stat_specifications` entry. `module_path` is recorded, never imported."""

    module_path: str
    class_name: str
    file_name: str
    kwargs: dict[str, Any]

    @property
    def spec_type(self) -> SpecType | None:
        return STAT_SPEC_CLASSES[self.class_name]


@dataclass(frozen=True)
class Manifest:
    model: ModelConfig
    stat_specifications: tuple[StatSpecEntry, ...]
    # True when the YAML has no `stat_specifications` and the 0.3 default was used (0.4's
    # default is `[]`: write the key when exporting).
    stat_specifications_defaulted: bool
    name: str | None = None
    # Written by Beimingwu when it repacks a verified upload.
    id: str | None = None
    semantic_specification_file: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def parse_manifest(
    data: bytes | str,
    *,
    members: Container[str] | None = None,
    field_path: str = MANIFEST_FIELD,
) -> Manifest:
    """Parse and check `learnware.yaml`. `members`: the package's files, to check that every
    named file exists. Raises one InvalidArgument listing every problem."""
    manifest, problems = manifest_violations(data, members=members, field_path=field_path)
    raise_violations(problems, "invalid learnware.yaml")
    assert manifest is not None
    return manifest


def manifest_violations(
    data: bytes | str,
    *,
    members: Container[str] | None = None,
    field_path: str = MANIFEST_FIELD,
) -> tuple[Manifest | None, list[FieldViolation]]:
    """(the manifest, []) or (a best-effort manifest or None, the problems)."""
    try:
        doc = load_yaml(data)
    except YamlRefused as exc:
        return None, [FieldViolation(field_path, str(exc))]
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return None, [FieldViolation(field_path, f"must be a mapping, got {type(doc).__name__}")]
    problems: list[FieldViolation] = []

    def bad(path: str, description: str) -> None:
        problems.append(FieldViolation(f"{field_path}.{path}" if path else field_path, description))

    def has_file(name: str) -> bool:
        return members is None or name in members

    model = _model(doc, bad, has_file)
    specs: list[StatSpecEntry] = []
    raw_specs = doc.get("stat_specifications", DEFAULT_STAT_SPECIFICATIONS)
    if not isinstance(raw_specs, list):
        bad("stat_specifications", f"must be a list, got {type(raw_specs).__name__}")
        raw_specs = []
    for i, entry in enumerate(raw_specs):
        spec = _stat_spec(entry, f"stat_specifications[{i}]", bad, has_file)
        if spec is not None:
            specs.append(spec)
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.file_name in seen:
            bad(f"stat_specifications[{i}].file_name", f"{spec.file_name!r} is listed twice")
        seen.setdefault(spec.file_name, i)

    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        bad("name", "must be a string")
    ident = doc.get("id")
    if ident is not None and not isinstance(ident, str | int):
        bad("id", "must be a string")
    semantic_file: str | None = None
    semantic = doc.get("semantic_specification")
    if semantic is not None:
        raw_file = semantic.get("file_name") if isinstance(semantic, dict) else None
        semantic_file = _relative(raw_file, "semantic_specification.file_name", bad)
    manifest = Manifest(
        model=model,
        stat_specifications=tuple(specs),
        stat_specifications_defaulted="stat_specifications" not in doc,
        name=name if isinstance(name, str) else None,
        id=None if ident is None else str(ident),
        semantic_specification_file=semantic_file,
        raw=doc,
    )
    return manifest, problems


def _relative(value: object, path: str, bad: _Bad) -> str | None:
    if not isinstance(value, str):
        bad(path, f"must be a relative file path, got {type(value).__name__}")
        return None
    name, why = normalize_name(value)
    if name is None:
        bad(path, f"{value!r}: {why}")
    return name


def _model(doc: dict[str, Any], bad: _Bad, has_file: _HasFile) -> ModelConfig:
    raw = doc.get("model", {})
    if not isinstance(raw, dict):
        bad("model", f"must be a mapping, got {type(raw).__name__}")
        raw = {}
    merged = {**DEFAULT_MODEL, **raw}
    class_name, module_path, kwargs = (
        merged.pop(k) for k in ("class_name", "module_path", "kwargs")
    )
    if not isinstance(class_name, str) or not _IDENTIFIER.match(class_name):
        bad("model.class_name", f"must be a Python class name, got {class_name!r}")
        class_name = str(class_name)
    if not isinstance(module_path, str):
        bad("model.module_path", f"must be a string, got {type(module_path).__name__}")
        module_path = ""
    elif module_path.endswith(".py"):
        file = _relative(module_path, "model.module_path", bad)
        if file is not None and not has_file(file):
            bad("model.module_path", f"{file!r} is not in the package")
        module_path = file or module_path
    elif not _MODULE.match(module_path):
        bad("model.module_path", f"must be a .py file or a module name, got {module_path!r}")
    if not isinstance(kwargs, dict):
        bad("model.kwargs", f"must be a mapping, got {type(kwargs).__name__}")
        kwargs = {}
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            bad("model.kwargs", f"key {key!r} is not a keyword argument name")
    return ModelConfig(class_name, module_path, kwargs, merged)


def _stat_spec(entry: object, path: str, bad: _Bad, has_file: _HasFile) -> StatSpecEntry | None:
    if not isinstance(entry, dict):
        bad(path, f"must be a mapping, got {type(entry).__name__}")
        return None
    ok = True
    for key in _STAT_SPEC_KEYS:
        if key not in entry:
            bad(f"{path}.{key}", "required")
            ok = False
    if not ok:
        return None
    module_path, class_name, kwargs = entry["module_path"], entry["class_name"], entry["kwargs"]
    if not isinstance(module_path, str):  # any module name is fine: it is never imported
        bad(f"{path}.module_path", f"must be a string, got {type(module_path).__name__}")
        ok = False
    if not isinstance(class_name, str) or class_name not in STAT_SPEC_CLASSES:
        allowed = ", ".join(STAT_SPEC_CLASSES)
        bad(f"{path}.class_name", f"{class_name!r} is not one of {allowed}")
        ok = False
    if not isinstance(kwargs, dict):
        bad(f"{path}.kwargs", f"must be a mapping, got {type(kwargs).__name__}")
        ok = False
    file_name = _relative(entry["file_name"], f"{path}.file_name", bad)
    if file_name is None:
        return None
    if not has_file(file_name):
        bad(f"{path}.file_name", f"{file_name!r} is not in the package")
        ok = False
    return StatSpecEntry(module_path, class_name, file_name, kwargs) if ok else None
