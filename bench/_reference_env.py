"""The reference `learnware` package for the benchmarks: its venv, and its side of a fit.

Imported by the benchmarks (venv management, single-thread settings, peak-memory meter), and
run as a script by the reference venv's Python (`python _reference_env.py fit ...`), so only
the standard library is imported at module level; numpy, torch and learnware are imported
inside the worker.

Time: the median of `REPEATS` runs for fits under `REPEAT_BELOW_SECONDS`, else one run (the
same rule on both sides; `timed_fit`). The spec kept is the first run's.

Peak memory (both sides, same method): each fit runs in a fresh process that first loads the
data and runs a small warm-up fit; then the peak-RSS counter is reset (`echo 5 >
/proc/self/clear_refs`, which sets VmHWM to the current RSS) and the baseline RSS is read; after
the first timed fit, peak = VmHWM - baseline, the resident memory the fit added at its highest point
(numpy, torch and BLAS buffers alike). Where clear_refs cannot be written the meter reports
VmHWM - baseline without the reset, an upper bound, and says so in `memory_method`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_VERSION = "0.4.0.post1"
TORCH_VERSION = "2.13.0"
# One pip command, so the resolver never picks a torch other than the pinned CPU build.
# fast_pytorch_kmeans is in learnware's "full" extra (which also pins torch 2.0.1), so it is
# named here instead; it is what `generate_rkme_table_spec` initialises with.
REFERENCE_REQUIREMENTS = (
    f"torch=={TORCH_VERSION}",
    f"learnware=={REFERENCE_VERSION}",
    "fast_pytorch_kmeans==0.2.0.1",
)
VENV_DIR = Path(__file__).resolve().parent / ".ref-venv"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WARMUP_ROWS = 500
REPEATS = 3  # timed runs of a fit whose first run took under REPEAT_BELOW_SECONDS
REPEAT_BELOW_SECONDS = 5.0

_PROBE = """
import json, importlib.metadata as m
import torch
from learnware.specification import generate_rkme_table_spec, RKMETableSpecification
import fast_pytorch_kmeans, qpsolvers
names = ("learnware", "torch", "numpy", "qpsolvers", "clarabel", "fast_pytorch_kmeans")
versions = {name: m.version(name) for name in names}
versions["torch_cuda"] = torch.version.cuda
print(json.dumps(versions))
"""


# --- environment -----------------------------------------------------------------------------


def single_thread_env() -> dict[str, str]:
    """This process's environment with every BLAS/OpenMP pool limited to one thread."""
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    return env


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def _probe(python: Path) -> dict[str, Any] | None:
    """The reference's package versions, or None when it does not import or is not CPU torch."""
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", _PROBE], capture_output=True, text=True, env=single_thread_env()
    )
    if done.returncode != 0:
        return None
    versions: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not versions["torch"].startswith(TORCH_VERSION) or versions["torch_cuda"] is not None:
        return None
    return versions


def ensure_venv(log: Callable[[str], None], venv: Path = VENV_DIR) -> dict[str, Any]:
    """Reuse the reference venv when it works, else create/repair it; its package versions."""
    python = venv_python(venv)
    versions = _probe(python)
    if versions is not None:
        log(f"reference venv: reusing {venv}")
        return versions
    if not python.exists():
        log(f"reference venv: creating {venv}")
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    log("reference venv: pip install " + " ".join(REFERENCE_REQUIREMENTS) + " (a few minutes)")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *REFERENCE_REQUIREMENTS], check=True
    )
    versions = _probe(python)
    if versions is None:
        raise RuntimeError(
            f"{venv}: learnware does not import, or torch is not the {TORCH_VERSION} CPU build"
        )
    return versions


# --- peak memory -----------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(match.group(1))


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


@dataclass
class PeakMeter:
    """Resident memory a block of code added at its peak (see the module docs)."""

    baseline_kib: int = 0
    peak_kib: int = 0
    method: str = ""
    _reset: bool = field(default=False, repr=False)

    def __enter__(self) -> PeakMeter:
        self._reset = _reset_peak()
        self.baseline_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kib = max(0, _status_kib("VmHWM") - self.baseline_kib)
        self.method = (
            "VmHWM after clear_refs reset - VmRSS before"
            if self._reset
            else "VmHWM - VmRSS before (no clear_refs reset: upper bound)"
        )


@dataclass
class Timing:
    """Wall-clock and process CPU seconds of each timed run of a fit."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, fit: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": median(self.wall),
            "cpu_seconds": median(self.cpu),
            "runs": self.wall,
        }


def timed_fit(fit: Callable[[], Any]) -> tuple[Any, Timing, PeakMeter]:
    """The fit's result, its timings and the first run's peak memory.

    A fit faster than `REPEAT_BELOW_SECONDS` runs `REPEATS` times (report the median); the same
    rule on both sides.
    """
    timing = Timing()
    with PeakMeter() as meter:
        result = timing.run(fit)
    while len(timing.wall) < REPEATS and timing.wall[0] < REPEAT_BELOW_SECONDS:
        timing.run(fit)
    return result, timing, meter


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- the reference's fit (runs in the reference venv) ----------------------------------------


def _limit_threads() -> dict[str, Any]:
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    pools = [
        f"{info['internal_api']}={info['num_threads']}" for info in threadpoolctl.threadpool_info()
    ]
    return {"torch_threads": torch.get_num_threads(), "pools": pools}


def _fit_reference(x: Any) -> Any:
    from learnware.specification import generate_rkme_table_spec

    return generate_rkme_table_spec(
        x,
        gamma=0.1,
        reduced_set_size=100,
        step_size=0.1,
        steps=3,
        nonnegative_beta=True,
        reduce=True,
    )


def _check_ours(ours_path: Path, reference: Any) -> dict[str, Any]:
    """Load our spec JSON with the reference's loader; its `dist` to the reference's spec."""
    from learnware.specification import RKMETableSpecification

    ours = RKMETableSpecification()
    ours.load(str(ours_path))
    return {
        "ours_z_shape": list(ours.z.shape),
        "dist_ours_reference": ours.dist(reference),
    }


def run_reference_fit(data: Path, out_dir: Path, ours: Path | None) -> dict[str, Any]:
    """Warm up, then time and meter one reference fit of the rows in `data`; save its spec."""
    import numpy as np
    import torch

    threads = _limit_threads()
    torch.manual_seed(0)  # fast_pytorch_kmeans starts from torch.randint rows
    x = np.load(data)
    _fit_reference(x[:WARMUP_ROWS].copy())
    torch.manual_seed(0)
    spec, timing, meter = timed_fit(lambda: _fit_reference(x))
    spec_path = out_dir / "reference_spec.json"
    spec.save(str(spec_path))
    result: dict[str, Any] = {
        **timing.as_dict(),
        "peak_kib": meter.peak_kib,
        "baseline_kib": meter.baseline_kib,
        "memory_method": meter.method,
        "spec": str(spec_path),
        **threads,
    }
    if ours is not None:
        result.update(_check_ours(ours, spec))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one reference RKME fit (reference venv)")
    parser.add_argument("command", choices=["fit"])
    parser.add_argument("data", type=Path, help=".npy of float32 rows")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--ours", type=Path, help="our spec JSON, to load and compare")
    args = parser.parse_args(argv)
    result = run_reference_fit(args.data, args.out_dir, args.ours)
    (args.out_dir / "reference_result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
