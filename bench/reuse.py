"""Benchmark: sandboxed predict latency (cold and warm, 1/3/5 learnwares, 10k rows), the
sandbox's overhead against an in-process call, and the job selector against the reference.

    python bench/reuse.py            # 20 warm calls per row; job selector: reference at 1,000
    python bench/reuse.py --quick    # 7 warm calls per row; reference at herding_num 100; JSON last

Predict: the reference fixture learnware (`learnware_digits_svc.zip`, an sklearn SVC on 64
features, loaded through its own `__init__.py` and pickle inside the sandbox), rezipped with
another zip comment per member so that each member is its own package with its own sandbox
worker, as distinct learnwares are. Input: 10,000 rows (the fixture's 100 digit rows repeated
with N(0, 0.5) noise, float64). Measured in this process at the level of
`reuse_service.engine.ReuseEngine`: members run concurrently in their bubblewrap workers and
are combined by AVERAGE_MEAN (SINGLE for one), exactly what Predict does after resolving the
learnwares; registry lookups and the gRPC transfer of the 5 MB input are not included.
Cold = a fresh pool (sandbox start, interpreter and scikit-learn import, package import and
unpickling, then the call); warm = median (p50) and p90 of repeated calls to the warm workers.
In-process = the same model unpickled into this process, `predict` on the same rows (what
running without isolation would cost), timed alternately with the sandboxed calls of one
learnware so both see the same machine load; `sandbox_overhead_ratio` = the median over those
pairs of sandboxed time / in-process time. Two more rows isolate the sandbox's own cost
from the model's: the fixture's 100 rows (predict itself nearly free) and a pass-through
package (the fixture with a model that returns its first column) on the 10,000 rows:
framing, pipes, npy both ways.

Job selector: `bench/_job_selector_bench.py` (its docstring has the method); its rows and
figures are merged here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _job_selector_bench, _reference_env
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
ROWS = 10_000
MEMBER_COUNTS = (1, 3, 5)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


PASS_THROUGH = """
from learnware.model.base import BaseModel


class PickleLoadedModel(BaseModel):
    def __init__(self, input_shape, output_shape, **kwargs):
        super().__init__(input_shape=input_shape, output_shape=output_shape)

    def predict(self, X):
        return X[:, 0].copy()
"""


def pass_through_package(fixture: bytes) -> bytes:
    """The fixture with a model that only returns its first column: what remains of a call
    is the sandbox's own cost (frames through the pipes, npy encoding and decoding)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fixture)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("__init__.py"):
                dst.writestr(info, PASS_THROUGH)
            elif not info.filename.endswith("model.pkl"):
                dst.writestr(info, src.read(info))
    return out.getvalue()


def user_rows() -> np.ndarray:
    base = np.load(FIXTURES / "digits_classes0to4_first100.npy").astype(np.float64)
    rng = np.random.default_rng(0)
    rows = base[rng.integers(0, len(base), ROWS)]
    return rows + rng.normal(0.0, 0.5, rows.shape)


def in_process_times(model_file: Path, x: np.ndarray, calls: int) -> tuple[np.ndarray, list[float]]:
    """The same model unpickled into this process (one thread): its output and call times."""
    import threadpoolctl

    with open(model_file, "rb") as fd:
        model = pickle.load(fd)
    times = []
    with threadpoolctl.threadpool_limits(1):
        model.predict(x[:10])
        for _ in range(calls):
            start = time.perf_counter()
            expected = model.predict(x)
            times.append(time.perf_counter() - start)
    return expected, times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def predict_rows(warm_calls: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from lwdock.registry_client import RegistryClient
    from lwdock.semantic.checker import Semantic
    from lwdock.uploads import rezip
    from reuse_service.engine import Member, ReuseEngine, Strategy, combine
    from reuse_service.packages import PackageStore
    from reuse_service.runtime import RuntimeState
    from reuse_service.sandbox import SandboxLimits, probe_bubblewrap
    from reuse_service.workers import WorkerPool

    state = RuntimeState()
    state.sandbox = await probe_bubblewrap()
    if not state.sandbox.available:
        raise SystemExit(f"no sandbox on this host: {state.sandbox.reason}")
    semantic = Semantic.from_reference_dict(
        json.loads((FIXTURES / "learnware_digits_svc.semantic.json").read_text())
    )
    fixture = (FIXTURES / "learnware_digits_svc.zip").read_bytes()
    x = user_rows()
    rows: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lwdock-bench-reuse-") as tmp:
        store = PackageStore(Path(tmp) / "packages")
        members = [
            Member(f"learnwares/bench-{i}", None, store.add(rezip(fixture, b"m%d" % i), semantic))
            for i in range(max(MEMBER_COUNTS))
        ]
        registry = RegistryClient("127.0.0.1:9")

        model_file = members[0].package.files / "model.pkl"
        expected, local = in_process_times(model_file, x, 1)
        paired: list[float] = []
        # The fixed cost of a call: the fixture's own 100 rows, where predict itself is cheap.
        small = x[:100]
        _, local_small = in_process_times(members[0].package.files / "model.pkl", small, 30)
        pool = WorkerPool(2)
        engine = ReuseEngine(state, SandboxLimits(), store, pool, registry)
        await engine.run(members[0], small, 120.0)
        sandbox_small = []
        for _ in range(30):
            start = time.perf_counter()
            await engine.run(members[0], small, 120.0)
            sandbox_small.append(time.perf_counter() - start)
        await pool.close()
        small_rows = [
            {"case": "in-process predict (no isolation)", "learnwares": 1, "rows": 100,
             "cold_s": None, "warm_p50_ms": 1000 * statistics.median(local_small),
             "warm_p90_ms": 1000 * percentile(local_small, 90)},
            {"case": "sandboxed predict", "learnwares": 1, "rows": 100, "cold_s": None,
             "warm_p50_ms": 1000 * statistics.median(sandbox_small),
             "warm_p90_ms": 1000 * percentile(sandbox_small, 90)},
        ]  # fmt: skip
        passing_package = store.add(pass_through_package(fixture), semantic)
        passing = Member("learnwares/pass-through", None, passing_package)
        pool = WorkerPool(2)
        engine = ReuseEngine(state, SandboxLimits(), store, pool, registry)
        await engine.run(passing, x, 120.0)
        transfer = []
        for _ in range(30):
            start = time.perf_counter()
            await engine.run(passing, x, 120.0)
            transfer.append(time.perf_counter() - start)
        await pool.close()
        small_rows.append(
            {"case": "sandboxed pass-through (returns X[:, 0]): the sandbox's own cost",
             "learnwares": 1, "rows": ROWS, "cold_s": None,
             "warm_p50_ms": 1000 * statistics.median(transfer),
             "warm_p90_ms": 1000 * percentile(transfer, 90), "vs in-process": None}
        )  # fmt: skip
        pass_through_ms = 1000 * statistics.median(transfer)
        figures["sandbox_call_ms_10k_rows_pass_through"] = round(pass_through_ms, 2)
        small_rows[0]["vs in-process"] = 1.0
        small_rows[1]["vs in-process"] = small_rows[1]["warm_p50_ms"] / small_rows[0]["warm_p50_ms"]
        figures["sandbox_overhead_ms_100_rows"] = round(
            small_rows[1]["warm_p50_ms"] - small_rows[0]["warm_p50_ms"], 2
        )

        for count in MEMBER_COUNTS:
            pool = WorkerPool(8)
            engine = ReuseEngine(state, SandboxLimits(), store, pool, registry)
            chosen = members[:count]

            async def call(engine: ReuseEngine = engine, chosen: list = chosen) -> np.ndarray:
                outcomes = await engine.run_all(chosen, x, 120.0)
                for outcome in outcomes:
                    if outcome.error is not None:
                        raise outcome.error
                outputs = [o.output for o in outcomes]
                if len(outputs) == 1:
                    return outputs[0]  # type: ignore[return-value]
                return combine(Strategy.AVERAGE_MEAN, outputs, None)  # type: ignore[arg-type]

            _log(f"{count} learnware(s): cold call")
            start = time.perf_counter()
            first = await call()
            cold = time.perf_counter() - start
            if count == 1:
                assert np.array_equal(first, expected), "sandboxed output differs"
            warm = []
            for _ in range(warm_calls):
                start = time.perf_counter()
                await call()
                warm.append(time.perf_counter() - start)
                if count == 1:  # interleaved with in-process calls: both see the same load
                    _, again = in_process_times(model_file, x, 1)
                    local.extend(again)
                    paired.append(warm[-1] / again[0])
            await pool.close()
            rows.append(
                {"case": "sandboxed predict" + (", AVERAGE_MEAN" if count > 1 else ""),
                 "learnwares": count, "rows": ROWS, "cold_s": cold,
                 "warm_p50_ms": 1000 * statistics.median(warm),
                 "warm_p90_ms": 1000 * percentile(warm, 90)}
            )  # fmt: skip
            figures[f"cold_s_{count}_learnwares"] = round(cold, 3)
            figures[f"warm_p50_ms_{count}_learnwares"] = round(1000 * statistics.median(warm), 2)
        await registry.close()
    rows.insert(0, {"case": "in-process predict (no isolation)", "learnwares": 1, "rows": ROWS,
                    "cold_s": None, "warm_p50_ms": 1000 * statistics.median(local),
                    "warm_p90_ms": 1000 * percentile(local, 90)})  # fmt: skip
    in_process = rows[0]["warm_p50_ms"]
    one = rows[1]["warm_p50_ms"]
    for row in rows:
        row["vs in-process"] = row["warm_p50_ms"] / in_process
    figures["in_process_p50_ms"] = round(in_process, 2)
    # Median of per-pair ratios (a sandboxed call, then the same call in process).
    figures["sandbox_overhead_ratio"] = round(statistics.median(paired), 3)
    figures["sandbox_overhead_ms"] = round(one - in_process, 2)
    return rows + small_rows, figures


def predict_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | learnwares | rows | cold s | warm p50 ms | warm p90 ms | p50 vs in-process |",
        "|" + "---|" * 7,
    ]
    for row in rows:
        cold = "-" if row["cold_s"] is None else f"{row['cold_s']:.2f}"
        ratio = "-" if row["vs in-process"] is None else f"{row['vs in-process']:.2f}x"
        lines.append(
            f"| {row['case']} | {row['learnwares']} | {row['rows']:,} | {cold} "
            f"| {row['warm_p50_ms']:.1f} "
            f"| {row['warm_p90_ms']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls; reference at 100")
    parser.add_argument("--skip-job-selector", action="store_true", help="predict rows only")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    warm_calls = 7 if args.quick else 20
    rows, figures = asyncio.run(predict_rows(warm_calls))
    selector_rows: list[dict[str, Any]] = []
    if not args.skip_job_selector:
        import _job_selector_bench as job_selector

        selector_rows, selector_figures = job_selector.run(args.quick, log=_log)
        figures.update(selector_figures)
    figures["total_seconds"] = round(time.perf_counter() - began, 1)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/reuse.py" + (" --quick" if args.quick else "")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# {command} | {now} | {os.cpu_count()} cores | {platform.python_version()}")
    print(f"# {ROWS:,} rows x 64 float64; {warm_calls} warm calls per row; load average {load}")
    print(predict_table(rows))
    if selector_rows:
        print()
        print(job_selector.table(selector_rows))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
