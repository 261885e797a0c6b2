"""The registry's submission check (REFERENCE.md §8.2, run only in the sandbox).

Validate the package as data, refuse requirements the runtime lacks, load the model in a
sandbox worker, check its declared input shape against the semantic spec, then predict on
rows herded from its own table spec and on random rows of the declared shape and check each
output against the semantic spec: one row out per row in; classification: labels in
[0, Output.Dimension) or one score per class; regression: Output.Dimension values per row
(a 1-D output for dimension 1); otherwise the declared output shape. A failed check is a
result (passed=False with a reason and a log), not an error; only a request that cannot be
checked at all (no sandbox, a bad request) raises.
"""

from __future__ import annotations

import asyncio
import string
from dataclasses import dataclass, field

import numpy as np

from lwdock.errors import InvalidArgument, LwdockError, ResourceExhausted
from lwdock.rkme.herding import herd
from lwdock.semantic.checker import Semantic
from reuse_service.engine import Member, ReuseEngine
from reuse_service.packages import Package, missing_requirements
from reuse_service.workers import WorkerError

CHECK_ROWS = 10
SEED = 0


@dataclass
class CheckResult:
    passed: bool
    reason: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)[-30_000:]


def check_inputs(package: Package, semantic: Semantic) -> list[tuple[str, np.ndarray]]:
    """(label, rows) to predict on, per data type (§8.2 plus herded rows for tables)."""
    rng = np.random.default_rng(SEED)
    shape = package.validated.input_shape
    if semantic.data_type == "Text":
        alphabet = np.array(list(string.ascii_letters + string.digits + string.punctuation))
        texts = ["".join(rng.choice(alphabet, int(rng.integers(10, 1001)))) for _ in range(10)]
        return [("random texts", np.array(texts))]
    if shape is None:
        raise InvalidArgument.for_field("package", "the model declares no input_shape")
    inputs = []
    spec = package.table_spec
    if semantic.data_type == "Table" and spec is not None and spec.sample_shape == shape:
        herded = herd(spec, CHECK_ROWS, seed=SEED).astype(np.float64)
        inputs.append(("rows herded from the spec", herded))
    if semantic.data_type == "Image":
        inputs.append(("random images", rng.integers(0, 255, (CHECK_ROWS, *shape))))
    else:
        inputs.append(("random rows", rng.standard_normal((CHECK_ROWS, *shape))))
    return inputs


def output_problem(
    output: np.ndarray, rows: int, semantic: Semantic, declared: tuple[int, ...] | None
) -> str:
    """Why `output` does not fit the semantic spec ("" when it does)."""
    if output.ndim == 0 or output.shape[0] != rows:
        return f"{rows} rows in, output shape {list(output.shape)}"
    per_row = output.shape[1:] or (1,)
    dim = semantic.output.dimension if semantic.output is not None else None
    if not np.issubdtype(output.dtype, np.number) and output.dtype != np.bool_:
        return f"output dtype {output.dtype} is not numeric"
    if semantic.task == "Classification" and dim:
        if per_row == (1,):
            labels = output.reshape(-1)
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                return "classification labels must be whole numbers"
            if labels.min() < 0 or labels.max() >= dim:
                return f"labels {labels.min()}..{labels.max()} outside [0, {dim})"
            return ""
        if per_row != (dim,):
            return f"output per row {list(per_row)} != [{dim}] (one score per class)"
        return ""
    if semantic.task == "Regression" and dim:
        if per_row != (dim,):
            return f"output per row {list(per_row)} != [{dim}] (Output.Dimension)"
        return ""
    if declared is not None and tuple(per_row) != tuple(declared):
        return f"output per row {list(per_row)} != declared output_shape {list(declared)}"
    return ""


async def check_learnware(
    engine: ReuseEngine, data: bytes, sha256: str, semantic: Semantic, name: str, timeout_s: float
) -> CheckResult:
    engine.require_sandbox()
    result = CheckResult(passed=False)
    say = result.lines.append
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s

    def left() -> float:
        return max(0.1, end - loop.time())

    try:
        package = await asyncio.to_thread(engine.packages.add, data, semantic, sha256)
    except (InvalidArgument, ResourceExhausted) as exc:
        return CheckResult(False, f"invalid package: {exc.message}"[:500], [exc.message])
    say(f"package {package.sha256} unpacked, model {package.validated.manifest.model.class_name}")
    missing = missing_requirements(package.validated.requirements)
    if missing:
        result.reason = f"requires packages this runtime does not provide: {', '.join(missing)}"
        say(result.reason)
        return result
    member = Member(name or f"sha256:{sha256[:12]}", None, package)
    try:
        worker = await engine.pool.get(
            lambda: engine.worker_spec(package, member.name), package.sha256, left()
        )
    except WorkerError as exc:
        result.reason = f"the model does not load: {exc.message}"[:500]
        result.lines += [result.reason, exc.log]
        return result
    except LwdockError as exc:
        result.reason = f"the model does not load: {exc.message}"[:500]
        say(result.reason)
        return result
    model = worker.model
    assert model is not None
    say(f"loaded: input_shape {model.input_shape}, output_shape {model.output_shape}")
    if semantic.data_type == "Table" and semantic.input is not None:
        expected = (semantic.input.dimension,)
        if model.input_shape != expected:
            result.reason = (
                f"model input_shape {model.input_shape} != ({expected[0]},) (Input.Dimension)"
            )
            say(result.reason)
            return result
    for label, x in check_inputs(package, semantic):
        try:
            output = await engine.run(member, x, left())
        except WorkerError as exc:
            result.reason = f"predict on {label} failed: {exc.message}"[:500]
            result.lines += [result.reason, exc.log]
            return result
        except LwdockError as exc:
            result.reason = f"predict on {label} failed: {exc.message}"[:500]
            say(result.reason)
            return result
        problem = output_problem(output, len(x), semantic, model.output_shape)
        if problem:
            result.reason = f"on {label}: {problem}"
            say(result.reason)
            return result
        say(f"predict on {len(x)} {label}: output {list(output.shape)} {output.dtype} ok")
    result.passed = True
    say("passed")
    return result
