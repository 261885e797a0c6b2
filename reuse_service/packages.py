"""Learnware packages on this host: unpacked once per sha256 under $LWDOCK_HOME/reuse/packages,
validated as data (lwdock.package), their requirements compared with the runtime's."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lwdock.errors import FailedPrecondition, InvalidArgument, PreconditionViolation
from lwdock.package.validate import ValidatedPackage, validate_package
from lwdock.package.zipsafe import open_zip
from lwdock.rkme.spec import RKMESpec, SpecType
from lwdock.semantic.checker import Semantic

# Provided by the sandbox itself or irrelevant to it.
IGNORED_REQUIREMENTS = frozenset(
    {"python", "pip", "setuptools", "wheel", "learnware", "conda", "_libgcc_mutex", "libgcc"}
)
# The distribution name at the start of a pip (PEP 508) or conda (`name=1.2`, `channel::name`)
# requirement line.
_NAME = re.compile(r"^(?:[A-Za-z0-9_.-]+::)?([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonicalize_name(name: str) -> str:
    """PEP 503 normalisation: runs of -, _ and . become one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    """An unpacked, validated package. `files` is the folder the sandbox binds read-only."""

    sha256: str
    files: Path
    validated: ValidatedPackage

    @property
    def table_spec(self) -> RKMESpec | None:
        return self.validated.stat_specs.get(SpecType.TABLE.value)

    def runner_init(self, package_dir: str) -> dict[str, object]:
        model = self.validated.manifest.model
        return {
            "package_dir": package_dir,
            "module_file": model.module_file or "__init__.py",
            "class_name": model.class_name,
            "kwargs": encode_kwargs(model.kwargs),
        }


def encode_kwargs(value: object) -> object:
    """The YAML's kwargs as JSON; tuples (!!python/tuple) survive as {"__tuple__": [...]}."""
    if isinstance(value, tuple):
        return {"__tuple__": [encode_kwargs(v) for v in value]}
    if isinstance(value, dict):
        return {str(k): encode_kwargs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode_kwargs(v) for v in value]
    return value


def requirement_name(line: str) -> str | None:
    """The distribution a requirements line (pip or conda style) names; None to ignore."""
    text = line.split(";", 1)[0].strip()
    if not text or text.startswith(("-", "#")) or "://" in text:
        return None
    match = _NAME.match(text)
    if match is None:
        return None
    name = canonicalize_name(match.group(1))
    return None if not name or name in IGNORED_REQUIREMENTS else name


def missing_requirements(lines: tuple[str, ...]) -> list[str]:
    """Requirement lines naming a distribution this runtime does not have. Versions are not
    compared: pinned versions differ between learnwares and a pickle from another version
    usually loads (the check then shows whether it predicts)."""
    missing = []
    for line in lines:
        name = requirement_name(line)
        if name is None:
            continue
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(line)
    return missing


def require_runtime(package: Package) -> None:
    missing = missing_requirements(package.validated.requirements)
    if missing:
        raise FailedPrecondition(
            f"the package requires what this runtime does not provide: {', '.join(missing)}",
            [
                PreconditionViolation("REQUIREMENT", line, "not installed in the sandbox runtime")
                for line in missing
            ],
            reason="REQUIREMENTS_NOT_PROVIDED",
        )


class PackageStore:
    """sha256 -> unpacked package, on disk (survives restarts) and in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[str, Package] = {}
        self._lock = threading.Lock()

    def _dir(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InvalidArgument.for_field("package_sha256", "must be 64 lowercase hex digits")
        return self.root / sha256

    def cached(self, sha256: str, semantic: Semantic) -> Package | None:
        known = self._known.get(sha256)
        if known is not None:
            return known
        folder = self._dir(sha256)
        if not (folder / "package.zip").is_file() or not (folder / "files").is_dir():
            return None
        return self._remember(sha256, folder, validate_package(
            folder / "package.zip", semantic, check_semantic_spec=False
        ))  # fmt: skip

    def add(self, data: bytes, semantic: Semantic, sha256: str = "") -> Package:
        """Validate (raises InvalidArgument / ResourceExhausted) and unpack `data`."""
        actual = hashlib.sha256(data).hexdigest()
        if sha256 and sha256.lower() != actual:
            raise InvalidArgument.for_field("package_sha256", "does not match the package bytes")
        known = self.cached(actual, semantic)
        if known is not None:
            return known
        validated = validate_package(data, semantic, check_semantic_spec=False)
        folder = self._dir(actual)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            with open_zip(data) as archive:
                archive.extract_to(staging / "files")
            (staging / "package.zip").write_bytes(data)
            os.chmod(staging, 0o755)
            try:
                staging.rename(folder)
            except OSError:  # another call unpacked it first
                if not (folder / "files").is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._remember(actual, folder, validated)

    def _remember(self, sha256: str, folder: Path, validated: ValidatedPackage) -> Package:
        package = Package(sha256, folder / "files", validated)
        with self._lock:
            self._known[sha256] = package
        return package
