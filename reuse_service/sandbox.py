"""Can this host isolate model code? A real bubblewrap probe, run once at start."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SandboxStatus:
    available: bool
    kind: str
    reason: str = ""


async def probe_bubblewrap(bwrap: str | None = None) -> SandboxStatus:
    """Start `true` inside a bubblewrap sandbox with every namespace unshared.

    Unavailable when the binary is missing or the kernel refuses the namespaces (e.g. inside
    an unprivileged container); the reason says which.
    """
    path = bwrap or shutil.which("bwrap")
    if path is None:
        return SandboxStatus(False, "", "bubblewrap (bwrap) is not installed")
    argv = [path, "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"]  # fmt: skip
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        return SandboxStatus(False, "bubblewrap", f"bubblewrap probe failed: {exc}")
    if process.returncode != 0:
        detail = stderr.decode(errors="replace").strip()
        return SandboxStatus(False, "bubblewrap", f"bubblewrap cannot create namespaces: {detail}")
    return SandboxStatus(True, "bubblewrap")
