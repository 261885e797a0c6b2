"""The sandboxed runner: loads one learnware package and answers predict requests.

Started by reuse_service inside bubblewrap as `python -s -B runner.py`; speaks frames (see
frames.py) on the stdin/stdout it was started with, which it moves to private descriptors
first, so whatever the learnware prints goes to stderr (the service's log) and cannot corrupt
the protocol. Before importing any package code it applies the resource limits it is given
(address space, CPU time, processes, file size, open files, no core dumps) and, when started
as root, switches to an unprivileged uid (root is exempt from RLIMIT_NPROC).

Runs with the standard library and numpy only (plus whatever the learnware imports).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import resource
import sys
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "shim"))
sys.path.insert(0, HERE)

import frames  # noqa: E402
import numpy as np  # noqa: E402

MAX_INPUT_BYTES = 1 << 36
PACKAGE_MODULE = "lwdock_learnware_package"


def _decode(value: Any) -> Any:
    """JSON kwargs back to Python: {"__tuple__": [...]} -> tuple (the YAML's !!python/tuple)."""
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _limit(kind: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    resource.setrlimit(kind, (soft, hard))


def apply_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    if limits.get("memory_bytes"):
        _limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    if limits.get("nproc"):
        _limit(resource.RLIMIT_NPROC, int(limits["nproc"]))
    if limits.get("fsize_bytes"):
        _limit(resource.RLIMIT_FSIZE, int(limits["fsize_bytes"]))
    if limits.get("nofile"):
        _limit(resource.RLIMIT_NOFILE, int(limits["nofile"]))
    if limits.get("cpu_s"):
        _limit(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits.get("cpu_lifetime_s") or 0))


def cpu_used_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arm_cpu_limit(limits: dict[str, int], key: str = "cpu_s") -> None:
    """A fresh per-call CPU budget (soft limit), within the worker's lifetime (hard) limit."""
    per_call = int(limits.get(key) or limits.get("cpu_s") or 0)
    if not per_call:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(cpu_used_s()) + per_call
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def drop_privileges(uid: int | None) -> None:
    if uid is None or os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise RuntimeError("could not leave uid 0")


def load_model(init: dict[str, Any]) -> Any:
    package_dir = init["package_dir"]
    module_file = os.path.join(package_dir, init.get("module_file") or "__init__.py")
    sys.path.insert(0, package_dir)
    if os.path.basename(module_file) == "__init__.py":
        spec = importlib.util.spec_from_file_location(
            PACKAGE_MODULE, module_file, submodule_search_locations=[package_dir]
        )
    else:
        spec = importlib.util.spec_from_file_location(PACKAGE_MODULE, module_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {init.get('module_file')}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_MODULE] = module
    spec.loader.exec_module(module)
    cls = getattr(module, init["class_name"])
    # As the reference does: pickles made from a script find the class on __main__.
    setattr(sys.modules["__main__"], init["class_name"], cls)
    return cls(**_decode(init.get("kwargs") or {}))


def _others() -> list[int]:
    """Live processes in this PID namespace other than this one and its init."""
    others = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            others.append(int(entry))
    return others


def reap_strays(rounds: int = 200) -> None:
    """Kill every other process of the sandbox (forks the learnware left behind, a fork bomb
    still forking). Only inside the sandbox's own PID namespace, where kill(-1) reaches
    nothing else: stop them all first so none can fork while being killed."""
    import signal
    import time

    for _ in range(rounds):
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGSTOP)  # Linux: all we may signal except ourselves and init
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not _others():
            return
        time.sleep(0.005)


def _shape(value: Any) -> list[int] | None:
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        return None


def _error(stage: str, exc: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception(exc))
    return {
        "ok": False,
        "error": f"{stage}: {type(exc).__name__}: {exc}"[:2000],
        "log": text[-8000:],
    }


def to_array(output: Any) -> np.ndarray:
    if hasattr(output, "detach") and hasattr(output, "cpu"):  # a torch tensor
        output = output.detach().cpu().numpy()
    array = np.asarray(output)
    if array.dtype.hasobject:
        raise TypeError(f"predict returned {type(output).__name__} of objects, not numbers")
    return array


def main() -> int:
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    init = frames.read_json(proto_in)
    limits = init.get("limits") or {}
    try:
        apply_limits(limits)
        drop_privileges(init.get("drop_to_uid"))
    except BaseException as exc:
        proto_out.write(frames.encode_json(_error("sandbox setup", exc)))
        proto_out.flush()
        return 1
    strays = bool(init.get("reap_strays"))
    try:
        arm_cpu_limit(limits, "load_cpu_s")  # imports (scikit-learn, torch) take a while
        model = load_model(init)
    except BaseException as exc:
        proto_out.write(frames.encode_json(_error("load", exc)))
        proto_out.flush()
        return 1
    finally:
        if strays:
            reap_strays()
    proto_out.write(
        frames.encode_json(
            {
                "ok": True,
                "input_shape": _shape(getattr(model, "input_shape", None)),
                "output_shape": _shape(getattr(model, "output_shape", None)),
                "cpu_s": cpu_used_s(),
            }
        )
    )
    proto_out.flush()

    while True:
        try:
            request = frames.read_json(proto_in)
        except EOFError:
            return 0
        op = request.get("op")
        if op == "exit":
            return 0
        if op != "predict":
            proto_out.write(frames.encode_json({"ok": False, "error": f"unknown op {op!r}"}))
            proto_out.flush()
            continue
        x = frames.load_array(frames.read_frame(proto_in, MAX_INPUT_BYTES))
        y: np.ndarray | None = None
        try:
            arm_cpu_limit(limits)
            y = to_array(model.predict(x))
            frames.npy_header(y)
        except BaseException as exc:
            y, reply = None, _error("predict", exc)
        finally:
            if strays:
                reap_strays()
        if y is None:
            proto_out.write(frames.encode_json(reply))
            proto_out.flush()
            continue
        proto_out.write(frames.encode_json({"ok": True, "cpu_s": cpu_used_s()}))
        frames.write_array(proto_out, y)


if __name__ == "__main__":
    sys.exit(main())
