"""Benchmark: the job selector, learnware-dock's against the reference package's, same run.

    python bench/_job_selector_bench.py            # reference at herding_num 1,000 (~15 min)
    python bench/_job_selector_bench.py --quick    # reference at 100; last line is JSON

`run(quick)` returns (table rows, key figures); bench/reuse.py calls it.

Market: two learnwares on R^10. Learnware i's inputs are a mixture of 3 Gaussians (seeded
N(0, 1) centres shifted by +-0.3 in every coordinate, isotropic std 0.7), so the two
overlap; its model labels a row argmax(x W_i) over 3 classes with its own seeded W_i. Each
learnware's spec is our `fit_table_rkme` (gamma 0.1, K 100, seed 0) of 2,000 of its rows;
the reference reads the same specs from their JSON. User: 500 rows, 200 drawn from learnware
0's distribution and 300 from learnware 1's; a row's true member is the one it was drawn
from, its true label that member's model's label.

Timed, on each side: everything the reuser does for those 500 rows: the user's embedding and
mixture weights, herding, training the selector, routing, and the members' predictions
(in-process models, so almost free). Ours: `user_spec_from_rows(x)`, `JobSelector.fit(specs,
herding_num=H, user_spec=...)`, `.predict(x, member)`. Reference: `JobSelectorReuser(
learnwares, herding_num=H).predict(x)` (its LightGBM selector; lightgbm is not among
learnware's dependencies and is installed into the reference venv here). Both run with one
thread (OMP/MKL/OPENBLAS_NUM_THREADS=1 and threadpoolctl; the reference also
torch.set_num_threads(1)); a run under 5 s is repeated 3 times and the median reported (the
rule of `_reference_env.timed_fit`); the reference runs in its own venv in a subprocess,
seeded with torch.manual_seed(0) and np.random.seed(0).

Accuracy: routing accuracy (rows sent to the member they were drawn from) and prediction
accuracy (reused predictions equal to the true labels), and for scale the oracle routing
accuracy: the Bayes rule with the true densities and the user's true proportions.
`job_selector_accuracy` is our routing accuracy at herding_num 1,000,
`reference_job_selector_accuracy` the reference's at `reference_herding_num` (100 with
--quick: its herding is cubic in the number of samples, ~620 s at 1,000).

This file also runs inside the reference venv (`--reference-worker`), so at module level it
imports only the standard library, numpy and `_reference_env`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _reference_env as ref_env  # bench/ is on sys.path when a file in it runs as a script
import numpy as np

DIM = 10
CLASSES = 3
COMPONENTS = 3
SHIFT = 0.3
COMPONENT_STD = 0.7
TRAIN_ROWS = 2000
USER_COUNTS = (200, 300)
HERDING_NUM = 1000  # the reference's default
QUICK_REFERENCE_HERDING_NUM = 100
LIGHTGBM_REQUIREMENT = "lightgbm==4.7.0"
REFERENCE_TIMEOUT_S = {True: 900.0, False: 3600.0}
SEED = 0


def _log(message: str) -> None:
    print(f"[job_selector] {message}", file=sys.stderr, flush=True)


# --- the market --------------------------------------------------------------------------------


def _centres(member: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, 100 + member])
    return rng.normal(size=(COMPONENTS, DIM)) + (2 * member - 1) * SHIFT


def draw(member: int, n: int, rng: np.random.Generator) -> np.ndarray:
    centres = _centres(member)
    return centres[rng.integers(0, COMPONENTS, size=n)] + COMPONENT_STD * rng.standard_normal(
        (n, DIM)
    )


def model_weights(member: int) -> np.ndarray:
    return np.random.default_rng([SEED, 200 + member]).normal(size=(DIM, CLASSES))


def model_predict(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.argmax(np.asarray(rows, dtype=np.float64) @ weights, axis=1)


def _log_density(member: int, x: np.ndarray) -> np.ndarray:
    """log of the member's mixture density (up to the shared Gaussian constant)."""
    sq = ((x[:, None, :] - _centres(member)[None, :, :]) ** 2).sum(axis=2)
    logs = -sq / (2 * COMPONENT_STD**2)
    top = logs.max(axis=1)
    return top + np.log(np.exp(logs - top[:, None]).mean(axis=1))


def make_market(work: Path) -> dict[str, Any]:
    """Specs (fitted here, saved as reference JSON), models and the user's rows."""
    from lwdock.rkme.fit import fit_table_rkme

    rng = np.random.default_rng([SEED, 1])
    specs, spec_paths = [], []
    for member in range(2):
        spec = fit_table_rkme(draw(member, TRAIN_ROWS, rng), seed=SEED)
        path = work / f"spec_{member}.json"
        path.write_text(spec.to_reference_json())
        specs.append(spec)
        spec_paths.append(str(path))
    user_rng = np.random.default_rng([SEED, 2])
    x = np.concatenate([draw(m, n, user_rng) for m, n in enumerate(USER_COUNTS)]).astype(np.float32)
    source = np.repeat(np.arange(2), USER_COUNTS)
    weights = [model_weights(m) for m in range(2)]
    labels = np.where(source == 0, model_predict(weights[0], x), model_predict(weights[1], x))
    prior = np.log(np.array(USER_COUNTS) / sum(USER_COUNTS))
    density = np.stack([_log_density(m, x.astype(np.float64)) + prior[m] for m in range(2)], 1)
    oracle = float(np.mean(np.argmax(density, axis=1) == source))
    np.savez(work / "market.npz", x=x, w0=weights[0], w1=weights[1])
    return {
        "specs": specs,
        "spec_paths": spec_paths,
        "x": x,
        "source": source,
        "labels": labels,
        "weights": weights,
        "oracle": oracle,
    }


# --- our side ------------------------------------------------------------------------------------


def run_ours(market: dict[str, Any], herding_num: int) -> dict[str, Any]:
    import threadpoolctl

    from reuse_service.reusers.job_selector import JobSelector, user_spec_from_rows

    x, weights = market["x"], market["weights"]
    routed: dict[str, np.ndarray] = {}

    def reuse() -> np.ndarray:
        selector = JobSelector.fit(
            market["specs"], herding_num=herding_num, user_spec=user_spec_from_rows(x), seed=SEED
        )
        routed["chosen"] = selector.select(x)
        return selector.predict(x, lambda i, rows: model_predict(weights[i], rows))

    with threadpoolctl.threadpool_limits(1):
        JobSelector.fit(market["specs"], herding_num=20)  # warm-up: imports, first calls
        predicted, timing, _ = ref_env.timed_fit(reuse)
    return {
        **timing.as_dict(),
        "routing_accuracy": float(np.mean(routed["chosen"] == market["source"])),
        "prediction_accuracy": float(np.mean(predicted == market["labels"])),
    }


# --- the reference's side (runs in the reference venv) ----------------------------------------


def reference_worker(work: Path, herding_num: int) -> dict[str, Any]:
    """Time JobSelectorReuser(...).predict(x) on the market saved in `work`."""
    import threadpoolctl
    import torch
    from learnware.learnware import Learnware
    from learnware.model import BaseModel
    from learnware.reuse import JobSelectorReuser
    from learnware.specification import RKMETableSpecification, Specification

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    data = np.load(work / "market.npz")
    x = data["x"]

    class LinearRule(BaseModel):
        def __init__(self, weights: np.ndarray) -> None:
            super().__init__(input_shape=(DIM,), output_shape=(1,))
            self.weights = weights

        def fit(self, X: np.ndarray, y: np.ndarray) -> None:
            pass

        def finetune(self, X: np.ndarray, y: np.ndarray) -> None:
            pass

        def predict(self, X: np.ndarray) -> np.ndarray:
            return model_predict(self.weights, X)

    learnwares = []
    for member in range(2):
        rkme = RKMETableSpecification()
        rkme.load(str(work / f"spec_{member}.json"))
        spec = Specification(stat_spec={"RKMETableSpecification": rkme})
        learnwares.append(Learnware(str(member), LinearRule(data[f"w{member}"]), spec, str(work)))

    routed: dict[str, np.ndarray] = {}

    class Recording(JobSelectorReuser):  # keeps the routing that predict() computes
        def job_selector(self, user_data: np.ndarray) -> np.ndarray:
            routed["chosen"] = super().job_selector(user_data)
            return routed["chosen"]

    def reuse() -> np.ndarray:
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        return Recording(learnwares, herding_num=herding_num).predict(x)

    Recording(learnwares, herding_num=10).predict(x[:20])  # warm-up: imports, first calls
    predicted, timing, _ = ref_env.timed_fit(reuse)
    np.save(work / "reference_chosen.npy", np.asarray(routed["chosen"], dtype=np.int64))
    np.save(work / "reference_predicted.npy", np.asarray(predicted))
    return timing.as_dict()


def ensure_reference_venv() -> dict[str, Any]:
    versions = ref_env.ensure_venv(_log)
    python = str(ref_env.venv_python())
    probe = [python, "-c", "import lightgbm; print(lightgbm.__version__)"]
    done = subprocess.run(probe, capture_output=True, text=True)
    if done.returncode != 0:
        _log(f"reference venv: pip install {LIGHTGBM_REQUIREMENT} (JobSelectorReuser needs it)")
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", LIGHTGBM_REQUIREMENT], check=True
        )
        done = subprocess.run(probe, capture_output=True, text=True, check=True)
    versions["lightgbm"] = done.stdout.strip()
    return versions


def run_reference(market: dict[str, Any], work: Path, herding_num: int, timeout: float) -> dict:
    command = [
        str(ref_env.venv_python()),
        str(Path(__file__).resolve()),
        "--reference-worker",
        str(work),
        str(herding_num),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=ref_env.single_thread_env(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"failure": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        _log(f"reference worker failed:\n{done.stderr[-3000:]}")
        return {"failure": "failed"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    chosen = np.load(work / "reference_chosen.npy")
    predicted = np.load(work / "reference_predicted.npy")
    result["routing_accuracy"] = float(np.mean(chosen == market["source"]))
    result["prediction_accuracy"] = float(np.mean(predicted == market["labels"]))
    return result


# --- the benchmark ---------------------------------------------------------------------------


def _row(side: str, herding_num: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "implementation": side,
        "herding_num": herding_num,
        "seconds": result.get("seconds"),
        "cpu_seconds": result.get("cpu_seconds"),
        "routing_accuracy": result.get("routing_accuracy"),
        "prediction_accuracy": result.get("prediction_accuracy"),
        "failure": result.get("failure", ""),
    }


def run(
    quick: bool,
    *,
    reference_herding_num: int | None = None,
    log: Callable[[str], None] = _log,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(table rows, key figures). The reference runs at `reference_herding_num` (default:
    100 with quick, else the reference's 1,000)."""
    start = time.perf_counter()
    ref_herding = reference_herding_num or (QUICK_REFERENCE_HERDING_NUM if quick else HERDING_NUM)
    versions = ensure_reference_venv()
    with tempfile.TemporaryDirectory(prefix="lwdock-job-selector-") as tmp:
        work = Path(tmp)
        log("market: fitting the two learnwares' specs")
        market = make_market(work)
        ours_herding = sorted({HERDING_NUM, ref_herding}, reverse=True)
        ours = {}
        for herding in ours_herding:
            log(f"ours at herding_num {herding}")
            ours[herding] = run_ours(market, herding)
        log(f"reference at herding_num {ref_herding} (its herding is cubic: minutes at 1,000)")
        reference = run_reference(market, work, ref_herding, REFERENCE_TIMEOUT_S[quick])
    rows = [_row("learnware-dock", h, ours[h]) for h in ours_herding]
    rows.append(_row(f"reference learnware {versions.get('learnware')}", ref_herding, reference))
    for row in rows:
        row["oracle_routing_accuracy"] = market["oracle"]
        row["reference_s / this"] = (
            reference["seconds"] / row["seconds"]
            if reference.get("seconds") and row["seconds"]
            else None
        )
    figures = {
        "job_selector_s": ours[HERDING_NUM]["seconds"],
        "job_selector_accuracy": ours[HERDING_NUM]["routing_accuracy"],
        "job_selector_prediction_accuracy": ours[HERDING_NUM]["prediction_accuracy"],
        "job_selector_herding_num": HERDING_NUM,
        "reference_job_selector_s": reference.get("seconds"),
        "reference_job_selector_accuracy": reference.get("routing_accuracy"),
        "reference_job_selector_prediction_accuracy": reference.get("prediction_accuracy"),
        "reference_herding_num": ref_herding,
        "reference_failure": reference.get("failure", ""),
        "job_selector_oracle_accuracy": market["oracle"],
        "job_selector_speedup_same_herding": (
            reference["seconds"] / ours[ref_herding]["seconds"]
            if reference.get("seconds")
            else None
        ),
        "job_selector_threads": 1,
        "job_selector_user_rows": int(sum(USER_COUNTS)),
        "reference_versions": versions,
        "job_selector_bench_seconds": round(time.perf_counter() - start, 1),
    }
    return rows, figures


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        "| implementation | herding_num | s | routing acc | prediction acc | oracle routing "
        "| reference s / this |",
        "|" + "---|" * 7,
    ]
    for row in rows:
        seconds = row["failure"] or num(row["seconds"], ".3f")
        ratio = row["reference_s / this"]
        lines.append(
            f"| {row['implementation']} | {row['herding_num']:,} | {seconds} "
            f"| {num(row['routing_accuracy'], '.3f')} | {num(row['prediction_accuracy'], '.3f')} "
            f"| {row['oracle_routing_accuracy']:.3f} | {num(ratio, '.1f')}"
            f"{'x' if ratio is not None else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reference at herding_num 100")
    parser.add_argument("--reference-herding-num", type=int, help="override the reference's")
    parser.add_argument(
        "--reference-worker", nargs=2, metavar=("WORK", "HERDING_NUM"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.reference_worker:
        work, herding = Path(args.reference_worker[0]), int(args.reference_worker[1])
        print(json.dumps(reference_worker(work, herding)))
        return 0
    rows, figures = run(args.quick, reference_herding_num=args.reference_herding_num)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/_job_selector_bench.py" + (" --quick" if args.quick else "")
    print(f"# {command} | {now} | {os.cpu_count()} cores | one thread each")
    print(
        f"# {sum(USER_COUNTS)} user rows ({USER_COUNTS[0]} + {USER_COUNTS[1]} from two "
        f"learnwares' distributions, d = {DIM}); time = user embedding + weights + herding + "
        "selector training + routing + member predictions"
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# load average at the end: {load} (other processes on the machine skew times)")
    print(table(rows))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
