"""Learnware packages (zips) as untrusted data: safe opening, `learnware.yaml`, validation.

Nothing in a package is ever imported or executed here; model code runs only in the sandbox.
"""

from lwdock.package.manifest import (
    Manifest,
    ModelConfig,
    RestrictedLoader,
    StatSpecEntry,
    YamlRefused,
    load_yaml,
    parse_manifest,
)
from lwdock.package.validate import ValidatedPackage, validate_package
from lwdock.package.zipsafe import SafeZip, ZipLimits, ZipMember, open_zip

__all__ = [
    "Manifest",
    "ModelConfig",
    "RestrictedLoader",
    "SafeZip",
    "StatSpecEntry",
    "ValidatedPackage",
    "YamlRefused",
    "ZipLimits",
    "ZipMember",
    "load_yaml",
    "open_zip",
    "parse_manifest",
    "validate_package",
]
