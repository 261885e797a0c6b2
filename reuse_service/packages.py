"""Learnware packages on this host: unpacked once per sha256 under $LWDOCK_HOME/reuse/packages,
validated as data (lwdock.package), their requirements compared with the runtime's. The folder
is a cache: at most `max_packages` unpacked packages, least recently used out first, never one
a warm worker has bound."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
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
MAX_PACKAGES = 256
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
    """sha256 -> unpacked package, on disk (survives restarts) and in memory.

    Bounded: once more than `max_packages` are unpacked (anyone may send CheckLearnware a
    package), the least recently used are removed, except those `in_use()` names (the packages
    of warm workers, whose sandboxes bind the folder) and the one just added or used.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_packages: int = MAX_PACKAGES,
        in_use: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.root = root
        self.max_packages = max(1, max_packages)
        self.in_use = in_use or (lambda: ())
        self._known: dict[str, Package] = {}
        self._lock = threading.Lock()
        self._order: OrderedDict[str, None] | None = None  # least recently used first

    def _recency(self) -> OrderedDict[str, None]:
        """Unpacked packages, oldest use first (from the folders' mtimes after a restart)."""
        if self._order is None:
            found = []
            if self.root.is_dir():
                for entry in self.root.iterdir():
                    if _SHA256.fullmatch(entry.name):
                        with contextlib.suppress(OSError):
                            found.append((entry.stat().st_mtime, entry.name))
            self._order = OrderedDict((name, None) for _, name in sorted(found))
        return self._order

    def _used(self, sha256: str) -> None:
        with self._lock:
            self._recency()[sha256] = None
            self._recency().move_to_end(sha256)
        with contextlib.suppress(OSError):  # the order survives restarts
            os.utime(self.root / sha256)

    def prune(self, keep: str = "") -> list[str]:
        """Remove the least recently used packages beyond `max_packages`; returns their sha256."""
        busy = set(self.in_use()) | {keep}
        removed = []
        with self._lock:
            order = self._recency()
            excess = len(order) - self.max_packages
            for sha256 in list(order):
                if excess <= 0:
                    break
                if sha256 in busy:
                    continue
                del order[sha256]
                self._known.pop(sha256, None)
                removed.append(sha256)
                excess -= 1
        for sha256 in removed:
            # Renamed first: a concurrent add() of the same package unpacks it afresh.
            doomed = self.root / f".removing-{sha256}-{os.getpid()}-{threading.get_ident()}"
            with contextlib.suppress(OSError):
                (self.root / sha256).rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        return removed

    def _dir(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise InvalidArgument.for_field("package_sha256", "must be 64 lowercase hex digits")
        return self.root / sha256

    def cached(self, sha256: str, semantic: Semantic) -> Package | None:
        known = self._known.get(sha256)
        if known is not None and known.files.is_dir():
            self._used(sha256)
            return known
        folder = self._dir(sha256)
        if not (folder / "package.zip").is_file() or not (folder / "files").is_dir():
            return None
        package = self._remember(sha256, folder, validate_package(
            folder / "package.zip", semantic, check_semantic_spec=False
        ))  # fmt: skip
        self._used(sha256)
        return package

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
        package = self._remember(actual, folder, validated)
        self._used(actual)
        self.prune(keep=actual)
        return package

    def _remember(self, sha256: str, folder: Path, validated: ValidatedPackage) -> Package:
        package = Package(sha256, folder / "files", validated)
        with self._lock:
            self._known[sha256] = package
        return package
