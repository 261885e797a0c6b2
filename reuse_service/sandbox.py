"""Can this host isolate model code (a real bubblewrap probe, run once at start), and the
sandbox's command line and limits."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

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


RUNNER_DIR = Path(__file__).resolve().parent / "worker"
# Where the runner and the package appear inside the sandbox.
SANDBOX_RUNNER_DIR = "/lwdock/runner"
SANDBOX_PACKAGE_DIR = "/learnware"
UNPRIVILEGED_UID = 65534  # nobody: the uid model code runs as when the service is root
SYSTEM_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
# The few files of /etc that the dynamic loader and Python's startup read.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime", "nsswitch.conf", "passwd", "group")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed worker (rlimits applied by the runner before any package code)."""

    memory_bytes: int = 4 * 1024**3  # RLIMIT_AS
    cpu_s: int = 60  # RLIMIT_CPU soft limit, re-armed for every predict
    load_cpu_s: int = 60  # the same for loading the package (its imports, its pickles)
    cpu_lifetime_s: int = 3600  # RLIMIT_CPU hard limit: the worker's whole life
    nproc: int = 64  # RLIMIT_NPROC (processes and threads)
    fsize_bytes: int = 64 * 1024**2  # RLIMIT_FSIZE: largest file it may write
    nofile: int = 256  # RLIMIT_NOFILE
    tmp_bytes: int = 256 * 1024**2  # size of its private /tmp (tmpfs)
    call_timeout_s: float = 60.0  # wall clock per call (load or predict)
    max_output_bytes: int = 512 * 1024**2  # largest array a worker may send back

    def runner_limits(self) -> dict[str, int]:
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_s": self.cpu_s,
            "load_cpu_s": self.load_cpu_s,
            "cpu_lifetime_s": max(self.cpu_lifetime_s, self.cpu_s, self.load_cpu_s),
            "nproc": self.nproc,
            "fsize_bytes": self.fsize_bytes,
            "nofile": self.nofile,
        }


# Environment of the runner: no inherited variables; one thread per numeric library.
RUNNER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "JOBLIB_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def python_roots(executable: str | None = None) -> list[str]:
    """Directories the interpreter needs: the venv (sys.prefix) and the base installation,
    unless they live under /usr (bound anyway)."""
    roots = []
    for root in {sys.prefix, sys.base_prefix, str(Path(executable or sys.executable).parent)}:
        resolved = str(Path(root).resolve())
        for candidate in (root, resolved):
            if not candidate.startswith("/usr/") and candidate not in roots:
                roots.append(candidate)
    # Keep the outermost directory of nested ones (a venv inside its base, say).
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def bwrap_argv(
    bwrap: str,
    package_dir: Path,
    *,
    as_root: bool,
    limits: SandboxLimits,
    python: str | None = None,
) -> tuple[list[str], int | None]:
    """The bubblewrap command line for one worker, and the uid the runner must switch to.

    No network, IPC, UTS or PID sharing with the host; a read-only view of /usr, the
    interpreter and its site-packages, the runner and this one package; a private /tmp
    (tmpfs of `limits.tmp_bytes`); fresh /proc and a read-only /dev with its own /dev/shm
    (another tmpfs of `limits.tmp_bytes`); a read-only root; a new session (no terminal); the
    sandbox dies with the service. Not root: `--unshare-all` (user namespace too). Root: every
    namespace but the user one, and the runner switches to uid 65534 itself before running
    package code, because root is exempt from RLIMIT_NPROC even inside a user namespace.
    """
    python = python or sys.executable
    argv = [bwrap]
    if as_root:
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try"]  # fmt: skip
    else:
        argv += ["--unshare-all"]
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in RUNNER_ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), f"/{link}"]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    # The private /tmp first: binds below it (a checkout or venv under /tmp) then land on it
    # instead of being hidden by it.
    argv += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    binds = [*python_roots(python), str(RUNNER_DIR)]
    made: set[str] = {"/tmp"}
    for path in binds:
        for ancestor in _ancestors(path) + _ancestors(SANDBOX_RUNNER_DIR + "/x"):
            if ancestor not in made and ancestor not in binds:
                made.add(ancestor)
                argv += ["--perms", "0755", "--dir", ancestor]
    for root in python_roots(python):
        argv += ["--ro-bind", root, root]
    argv += ["--ro-bind", str(RUNNER_DIR), SANDBOX_RUNNER_DIR]
    argv += ["--ro-bind", str(package_dir), SANDBOX_PACKAGE_DIR]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # bwrap's root and --dev tmpfs belong to the sandbox user when it runs unprivileged (a user
    # namespace) and have no size limit: a small /dev/shm of its own (POSIX semaphores and
    # shared memory), then /dev and / read-only, so only /tmp and /dev/shm take writes.
    argv += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    argv += ["--chdir", "/tmp"]
    argv += [python, "-s", "-B", f"{SANDBOX_RUNNER_DIR}/runner.py"]
    return argv, (UNPRIVILEGED_UID if as_root else None)


def unsandboxed_argv(python: str | None = None) -> list[str]:
    """Development only (LWDOCK_ALLOW_UNSANDBOXED): the runner as a plain child process; the
    rlimits still apply, nothing else does."""
    return [python or sys.executable, "-s", "-B", str(RUNNER_DIR / "runner.py")]
