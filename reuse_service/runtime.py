"""What reuse_service knows about its host: sandbox availability and readiness."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from reuse_service.sandbox import SandboxStatus


def _version() -> str:
    try:
        return metadata.version("learnware-dock")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class RuntimeState:
    allow_unsandboxed: bool = False
    sandbox: SandboxStatus = field(
        default_factory=lambda: SandboxStatus(False, "", "sandbox not probed yet")
    )
    version: str = field(default_factory=_version)

    @property
    def ready(self) -> bool:
        """Ready to run model code: sandboxed, or explicitly allowed without (dev only)."""
        return self.sandbox.available or self.allow_unsandboxed
