"""Benchmark: fitting a table RKME, learnware-dock against the reference `learnware` package.

    python bench/spec_fit.py            # n in {1e3, 1e4, 1e5} x d in {10, 100}
    python bench/spec_fit.py --quick    # n in {1e4, 1e5}, d = 10; last line is a JSON summary

Both sides fit the same seeded synthetic data (a float32 .npy in a temporary folder) with
gamma = 0.1, K = 100, steps = 3: ours with `lwdock.rkme.fit.fit_table_rkme(..., seed=0)`, the
reference with `generate_rkme_table_spec(X, gamma=0.1, reduced_set_size=100, step_size=0.1,
steps=3, nonnegative_beta=True, reduce=True)` in its own venv (`bench/.ref-venv`, created on
first use, see `_reference_env.py`).

Fairness: every fit runs in a fresh subprocess with OMP/MKL/OPENBLAS_NUM_THREADS=1 and
`threadpoolctl.threadpool_limits(1)`; the reference also calls `torch.set_num_threads(1)`, and
ours sets `lwdock.rkme.fit._POOL._workers = 1`, which turns off its thread pool of kernel tiles
(on by default when threadpoolctl is installed). Each worker runs a small warm-up fit first, so
import and first-call costs are not timed; a fit under 5 s is timed 3 times and the median
reported (the same rule on both sides). Peak memory is the resident memory the fit added at
its peak, measured the same way on both sides (`_reference_env.PeakMeter`).

Quality: the exact squared MMD between each spec and the data's empirical embedding, both by
our `lwdock.rkme.fit.mmd2_to_data` (the reference's spec is read from its JSON with
`RKMESpec.from_reference_json`). mmd2_to_data(spec, X) = b'K_zz b - 2 b'c + S(X), where only
the data term S(X) = mean k(x_n, x_m) costs N^2/2 kernel entries; above `DIRECT_QUALITY_ROWS`
rows S(X) is taken from our spec's mmd2_to_data and reused for the reference's spec (its spec
terms computed exactly); at or below it both call mmd2_to_data and the two ways are checked to
agree. The quality step runs in this process with all cores; it is not timed.

Interop: the reference venv loads our spec JSON with `RKMETableSpecification().load` and
computes its `dist` to the reference's own spec, which must be finite and equal our
`lwdock.rkme.mmd2` of the same pair within 1e-9 relative.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _reference_env as ref_env  # bench/ is on sys.path when this file runs as a script
import numpy as np
from _machine import cpu_model

GAMMA = 0.1
REDUCED_SET_SIZE = 100
STEPS = 3
SEED = 0
FULL_GRID = tuple((n, d) for n in (1_000, 10_000, 100_000) for d in (10, 100))
QUICK_GRID = ((10_000, 10), (100_000, 10))
DIRECT_QUALITY_ROWS = 10_000
MIXTURE_COMPONENTS = 8
COMPONENT_STD = 0.35
INTEROP_RTOL = 1e-9
DECOMPOSITION_ATOL = 1e-12
BENCH_DIR = Path(__file__).resolve().parent


def _log(message: str) -> None:
    print(f"[spec_fit] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------


def make_data(n: int, d: int) -> np.ndarray:
    """Seeded mixture of Gaussians, each column standardised to mean 0 and std 1, float32.

    `MIXTURE_COMPONENTS` components with N(0, 1) means and isotropic std `COMPONENT_STD`, and
    unequal weights: clustered like real tables, at the scale gamma = 0.1 is meant for.
    """
    rng = np.random.default_rng([SEED, n, d])
    means = rng.normal(size=(MIXTURE_COMPONENTS, d))
    weights = rng.dirichlet(np.full(MIXTURE_COMPONENTS, 2.0))
    labels = rng.choice(MIXTURE_COMPONENTS, size=n, p=weights)
    x = means[labels] + COMPONENT_STD * rng.standard_normal((n, d))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32)


# --- our side of a fit (the --worker-ours subprocess) -----------------------------------------


def _fit_ours(x: np.ndarray) -> Any:
    from lwdock.rkme.fit import fit_table_rkme

    return fit_table_rkme(x, gamma=GAMMA, reduced_set_size=REDUCED_SET_SIZE, steps=STEPS, seed=SEED)


def run_our_fit(data: Path, out_dir: Path) -> dict[str, Any]:
    """Single-threaded warm-up, then a timed and metered fit; saves the spec's JSON."""
    import threadpoolctl

    from lwdock.rkme import fit

    fit._POOL._workers = 1  # no tile threads: one thread, like the reference
    threadpoolctl.threadpool_limits(1)
    pools = [f"{i['internal_api']}={i['num_threads']}" for i in threadpoolctl.threadpool_info()]
    x = np.load(data)
    _fit_ours(x[: ref_env.WARMUP_ROWS].copy())
    spec, timing, meter = ref_env.timed_fit(lambda: _fit_ours(x))
    spec_path = out_dir / "ours_spec.json"
    spec_path.write_text(spec.to_reference_json())
    return {
        **timing.as_dict(),
        "peak_kib": meter.peak_kib,
        "baseline_kib": meter.baseline_kib,
        "memory_method": meter.method,
        "spec": str(spec_path),
        "tile_workers": fit._POOL._workers,
        "pools": pools,
    }


# --- running the two sides -----------------------------------------------------------------


@dataclass
class Side:
    """One side's fit of one cell: its result, or why there is none."""

    result: dict[str, Any] | None
    failure: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.result is None else float(self.result["seconds"])

    @property
    def cpu_seconds(self) -> float | None:
        return None if self.result is None else float(self.result["cpu_seconds"])

    @property
    def peak_mib(self) -> float | None:
        return None if self.result is None else self.result["peak_kib"] / 1024


def _run_worker(command: list[str], result_file: Path, timeout: float, name: str) -> Side:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=ref_env.single_thread_env(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Side(None, "timeout")
    if done.returncode != 0:
        _log(f"{name} worker failed:\n{done.stderr[-3000:]}")
        return Side(None, "failed")
    return Side(json.loads(result_file.read_text()))


def run_ours(data: Path, out_dir: Path, timeout: float) -> Side:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker-ours", str(data)]
    return _run_worker([*command, str(out_dir)], out_dir / "ours_result.json", timeout, "our")


def run_reference(data: Path, out_dir: Path, ours_spec: Path | None, timeout: float) -> Side:
    script = Path(ref_env.__file__).resolve()
    command = [str(ref_env.venv_python()), str(script), "fit", str(data), str(out_dir)]
    if ours_spec is not None:
        command += ["--ours", str(ours_spec)]
    return _run_worker(command, out_dir / "reference_result.json", timeout, "reference")


# --- quality and interop -----------------------------------------------------------------------


def _spec_terms(spec: Any, x: np.ndarray) -> float:
    """b'K_zz b - 2 b'c with c_i = mean_n k(z_i, x_n): the spec's part of mmd2_to_data."""
    from lwdock.rkme import gaussian_kernel

    z, beta = spec.flat_z, spec.beta
    rows = max(1, (1 << 20) // z.shape[0])
    c = np.zeros(z.shape[0])
    for start in range(0, x.shape[0], rows):
        c += gaussian_kernel(z, x[start : start + rows], spec.gamma).sum(axis=1)
    c /= x.shape[0]
    return float(beta @ gaussian_kernel(z, z, spec.gamma) @ beta - 2.0 * (beta @ c))


def quality(ours: Any, reference: Any | None, x: np.ndarray) -> tuple[float, float | None]:
    """mmd2_to_data of our spec and of the reference's (None when it has no spec)."""
    from lwdock.rkme.fit import mmd2_to_data

    ours_mmd2 = mmd2_to_data(ours, x)
    if reference is None:
        return ours_mmd2, None
    data_term = ours_mmd2 - _spec_terms(ours, x)
    reference_mmd2 = data_term + _spec_terms(reference, x)
    if x.shape[0] <= DIRECT_QUALITY_ROWS:
        direct = mmd2_to_data(reference, x)
        if abs(direct - reference_mmd2) > DECOMPOSITION_ATOL:
            raise RuntimeError(f"mmd2_to_data decomposition: {direct!r} vs {reference_mmd2!r}")
        reference_mmd2 = direct
    return ours_mmd2, reference_mmd2


def _load_spec(path: str) -> Any:
    from lwdock.rkme import RKMESpec

    return RKMESpec.from_reference_json(Path(path).read_text())


def interop_line(ours: Any, reference: Any, reference_result: dict[str, Any]) -> tuple[str, bool]:
    """Checks the reference's dist(our spec, its spec) against our mmd2 of the same pair."""
    from lwdock.rkme import mmd2

    theirs = float(reference_result["dist_ours_reference"])
    ours_value = mmd2(ours, reference)
    ok = (
        math.isfinite(theirs)
        and list(reference_result["ours_z_shape"]) == list(ours.z.shape)
        and abs(theirs - ours_value) <= INTEROP_RTOL * max(abs(theirs), abs(ours_value))
    )
    status = "OK" if ok else "MISMATCH"
    line = (
        f"reference loads our spec: {status} (dist ours vs reference: {theirs!r} vs {ours_value!r})"
    )
    return line, ok


# --- one cell of the grid ------------------------------------------------------------------


@dataclass
class Row:
    n: int
    d: int
    ours: Side
    reference: Side
    ours_mmd2: float | None = None
    reference_mmd2: float | None = None
    interop: str = ""
    interop_ok: bool | None = None

    @property
    def speedup(self) -> float | None:
        ours, theirs = self.ours.seconds, self.reference.seconds
        return None if ours is None or theirs is None else theirs / ours

    @property
    def quality_ratio(self) -> float | None:
        if self.ours_mmd2 is None or self.reference_mmd2 is None:
            return None
        return self.ours_mmd2 / self.reference_mmd2


def run_cell(n: int, d: int, work: Path, max_reference_seconds: float) -> Row:
    cell = work / f"n{n}_d{d}"
    cell.mkdir()
    x = make_data(n, d)
    data = cell / "data.npy"
    np.save(data, x)
    _log(f"n={n} d={d}: our fit")
    ours = run_ours(data, cell, timeout=max(600.0, max_reference_seconds))
    ours_spec = Path(ours.result["spec"]) if ours.result else None
    _log(f"n={n} d={d}: reference fit")
    reference = run_reference(data, cell, ours_spec, max_reference_seconds)
    row = Row(n, d, ours, reference)
    if ours.result is None:
        return row
    _log(f"n={n} d={d}: exact MMD^2 to the data")
    ours_loaded = _load_spec(ours.result["spec"])
    reference_loaded = _load_spec(reference.result["spec"]) if reference.result else None
    row.ours_mmd2, row.reference_mmd2 = quality(ours_loaded, reference_loaded, x)
    if reference.result is not None and reference_loaded is not None:
        row.interop, row.interop_ok = interop_line(ours_loaded, reference_loaded, reference.result)
    return row


# --- output ------------------------------------------------------------------------------------


def _num(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    header = (
        "| n | d | ours s | ours peak MiB | ours MMD² | ref s | ref peak MiB | ref MMD² "
        "| speedup | quality ratio |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        missing = row.reference.failure or "-"
        cells = [
            f"{row.n:,}",
            str(row.d),
            _num(row.ours.seconds, ".3f", row.ours.failure or "-"),
            _num(row.ours.peak_mib, ".1f"),
            _num(row.ours_mmd2, ".4e"),
            _num(row.reference.seconds, ".2f", missing),
            _num(row.reference.peak_mib, ".1f", missing),
            _num(row.reference_mmd2, ".4e", missing),
            _num(row.speedup, ".1f") + ("x" if row.speedup is not None else ""),
            _num(row.quality_ratio, ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], versions: dict[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        tag = f"n1e{round(math.log10(row.n))}" + ("" if row.d == 10 else f"_d{row.d}")
        out[f"speedup_{tag}"] = row.speedup
        out[f"ours_s_{tag}"] = row.ours.seconds
        out[f"reference_s_{tag}"] = row.reference.seconds
        out[f"quality_ratio_{tag}"] = row.quality_ratio
        ours_cpu, reference_cpu = row.ours.cpu_seconds, row.reference.cpu_seconds
        if ours_cpu is not None and reference_cpu is not None:
            out[f"speedup_cpu_{tag}"] = reference_cpu / ours_cpu
    ratios = [row.quality_ratio for row in rows if row.quality_ratio is not None]
    checks = [row.interop_ok for row in rows if row.interop_ok is not None]
    out["quality_ratio_max"] = max(ratios) if ratios else None
    out["reference_loads_our_spec"] = bool(checks) and all(checks)
    out["threads"] = 1
    out["reference_versions"] = versions
    out["memory_method"] = next(
        (row.ours.result["memory_method"] for row in rows if row.ours.result), None
    )
    out["total_seconds"] = round(seconds, 1)
    return out


def _report(rows: list[Row], versions: dict[str, Any], seconds: float, command: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {command} | {now} | {os.cpu_count()} cores, {cpu_model()}")
    print(
        f"# one thread each; reference learnware {versions.get('learnware')}, "
        f"torch {versions.get('torch')}; MMD² = exact lwdock mmd2_to_data on the same data"
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# load average at the end: {load} (other processes on the machine skew times)")
    print(table(rows))
    for row in rows:
        if row.interop:
            print(f"n={row.n:,} d={row.d}: {row.interop}")
    print(json.dumps(summary(rows, versions, seconds)))


# --- entry point -------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n in {1e4, 1e5}, d = 10 only")
    parser.add_argument(
        "--max-reference-seconds",
        type=float,
        default=900.0,
        help="a reference fit running longer is recorded as 'timeout' (default 900)",
    )
    parser.add_argument(
        "--worker-ours", nargs=2, metavar=("DATA", "OUT_DIR"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def bench(grid: tuple[tuple[int, int], ...], max_reference_seconds: float, command: str) -> int:
    start = time.perf_counter()
    versions = ref_env.ensure_venv(_log)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lwdock-spec-fit-") as work:
        for n, d in grid:
            rows.append(run_cell(n, d, Path(work), max_reference_seconds))
    _report(rows, versions, time.perf_counter() - start, command)
    return 0 if all(row.interop_ok is not False for row in rows) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker_ours:
        data, out_dir = (Path(p) for p in args.worker_ours)
        result = run_our_fit(data, out_dir)
        (out_dir / "ours_result.json").write_text(json.dumps(result))
        return 0
    grid = QUICK_GRID if args.quick else FULL_GRID
    command = "python bench/spec_fit.py" + (" --quick" if args.quick else "")
    return bench(grid, args.max_reference_seconds, command)


if __name__ == "__main__":
    sys.exit(main())
