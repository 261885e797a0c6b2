"""`lwdock demo`: a small learnware market on scikit-learn's digits, end to end.

What it does, against the running suite (`make up`):
1. Builds the market locally, seeded: the digits (1,797 8x8 images, pixels / 16) are split
   in half, a market half and a user half. Learnware i is a logistic regression trained on 4
   consecutive digits of the market half with skewed class ratios 0.4/0.4/0.1/0.1 (the
   reference's CIFAR-10 market design); its package outputs scores over all 10 digits
   (zeros for the digits it never saw), and its statistical spec is the RKME of its
   training rows.
2. Submits them through the registry (reusing identical packages from an earlier run),
   waits for reuse_service's checks to make them ACTIVE and for search to index them.
3. For each user task (2 pairs of digits from the user half, ratios 0.4/0.4/0.1/0.1), fits
   the user's RKME locally, searches (semantic filter: the demo's learnwares; statistical:
   the user's RKME), and reuses the result through reuse_service: the best single
   learnware (top-1), the mixture's learnwares averaged (average ensemble) and routed per
   row by the job selector.
4. Prints the reference's comparison: the mean error over users of mean-in-market (every
   learnware's error averaged), best-in-market (the best learnware per user, an oracle),
   top-1 reuse, average ensemble and job selector. Every number comes from outputs that
   reuse_service computed in its sandbox (one call per user runs every learnware and returns
   each one's output for the in-market rows).
With `--json` the last stdout line is one JSON object with those five keys. With `--up` the
demo first starts the suite itself (`lwdock up` as a child process, embedded defaults), and
after the table keeps it serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lwdock.client.types import Learnware, State, Strategy, learnware_id
from lwdock.errors import AlreadyExists, FailedPrecondition, PermissionDenied
from lwdock.rkme.spec import RKMESpec
from lwdock.search.v1 import resources_pb2 as search_resources
from lwdock.semantic.checker import Semantic
from lwdock.suite import stop_processes

NAME_PREFIX = "lwdock-demo-digits"
N_CLASSES = 10
CLASS_RATIOS = (0.4, 0.4, 0.1, 0.1)
KEYS = ("mean_in_market", "best_in_market", "top1_reuse", "average_ensemble", "job_selector")
LABELS = {
    "mean_in_market": "Mean in market (single)",
    "best_in_market": "Best in market (single, oracle)",
    "top1_reuse": "Top-1 reuse",
    "average_ensemble": "Average ensemble reuse",
    "job_selector": "Job selector reuse",
}

# The package's model: class scores over all 10 digits from a classifier that saw some.
MODEL_SOURCE = '''import os
import pickle

import numpy as np

from learnware.model.base import BaseModel


class DigitScores(BaseModel):
    """Scores over all digits from a classifier trained on a subset (others score 0)."""

    def __init__(self, input_shape, output_shape, pickle_filename="model.pkl", n_classes=10):
        super().__init__(input_shape=input_shape, output_shape=output_shape)
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), pickle_filename)
        with open(path, "rb") as handle:
            self.model = pickle.load(handle)
        self.n_classes = n_classes

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        scores = np.zeros((len(X), self.n_classes))
        scores[:, self.model.classes_.astype(int)] = self.model.predict_proba(X)
        return scores

    def fit(self, X, y):
        self.model.fit(X, y)

    def finetune(self, X, y):
        pass
'''


def digit_scores(model: Any, X: np.ndarray) -> np.ndarray:
    """What the package's DigitScores.predict returns, computed here."""
    scores = np.zeros((len(X), N_CLASSES))
    scores[:, model.classes_.astype(int)] = model.predict_proba(X)
    return scores


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    learnwares: int = 8
    users: int = 6
    rows_per_learnware: int = 200
    rows_per_user: int = 150
    reduced_set_size: int = 50
    max_mixture: int = 3
    check_timeout_s: float = 240.0
    index_timeout_s: float = 60.0


@dataclass
class MarketLearnware:
    index: int
    classes: tuple[int, ...]
    model: Any
    spec: RKMESpec
    package: bytes
    semantic: Semantic
    id: str = ""

    @property
    def name(self) -> str:
        return self.semantic.name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.package).hexdigest()


@dataclass
class UserTask:
    index: int
    classes: tuple[int, ...]
    X: np.ndarray
    y: np.ndarray
    spec: RKMESpec


@dataclass
class UserOutcome:
    user: int
    errors: dict[str, float]
    top1: str
    reused: tuple[str, ...]


@dataclass
class DemoResult:
    table: dict[str, float]
    users: list[UserOutcome] = field(default_factory=list)
    learnwares: list[str] = field(default_factory=list)
    uploaded: int = 0
    seconds: float = 0.0

    def to_dict(self, config: DemoConfig) -> dict[str, Any]:
        return {
            **{key: round(self.table[key], 6) for key in KEYS},
            "users": len(self.users),
            "learnwares": len(self.learnwares),
            "seed": config.seed,
            "uploaded": self.uploaded,
            "seconds": round(self.seconds, 1),
        }


def _draw(
    rng: np.random.Generator, pools: dict[int, np.ndarray], classes: tuple[int, ...], total: int
) -> np.ndarray:
    """Row indices: CLASS_RATIOS of `total` from each class's pool (without replacement
    while the pool lasts)."""
    picked = []
    for cls, ratio in zip(classes, CLASS_RATIOS, strict=True):
        pool = pools[cls]
        count = max(1, round(total * ratio))
        picked.append(rng.choice(pool, size=count, replace=count > len(pool)))
    return rng.permutation(np.concatenate(picked))


def build_market(config: DemoConfig) -> tuple[list[MarketLearnware], list[UserTask]]:
    """The learnwares (trained, specified, packed) and the user tasks; all seeded."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from lwdock.package.pack import pack_model, semantic
    from lwdock.rkme.fit import fit_table_rkme

    digits = load_digits()
    X = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(X))
    market_rows, user_rows = order[: len(X) // 2], order[len(X) // 2 :]
    market_pools = {c: market_rows[y[market_rows] == c] for c in range(N_CLASSES)}
    user_pools = {c: user_rows[y[user_rows] == c] for c in range(N_CLASSES)}

    learnwares = []
    for i in range(config.learnwares):
        start = (i * N_CLASSES) // config.learnwares
        classes = tuple((start + j) % N_CLASSES for j in range(4))
        rows = _draw(rng, market_pools, classes, config.rows_per_learnware)
        model = LogisticRegression(max_iter=2000).fit(X[rows], y[rows])
        spec = fit_table_rkme(X[rows], reduced_set_size=config.reduced_set_size, seed=config.seed)
        shown = ", ".join(str(c) for c in classes)
        sem = semantic(
            name=f"{NAME_PREFIX}-{i:02d}",
            description=f"lwdock demo: logistic regression on sklearn digits {shown} "
            "(class ratios 0.4/0.4/0.1/0.1); outputs scores over the 10 digits.",
            scenarios=("Education",),
            input_dimension=64,
            input_descriptions={k: f"pixel {k // 8},{k % 8} / 16" for k in range(64)},
            output_dimension=N_CLASSES,
            output_descriptions={k: f"digit {k}" for k in range(N_CLASSES)},
        )
        package = pack_model(
            model,
            spec,
            input_shape=64,
            output_shape=N_CLASSES,
            module_source=MODEL_SOURCE,
            class_name="DigitScores",
            model_kwargs={"n_classes": N_CLASSES},
        )
        learnwares.append(MarketLearnware(i, classes, model, spec, package, sem))

    users = []
    for j in range(config.users):
        first, second = rng.choice(N_CLASSES, size=2, replace=False)
        classes = (int(first), int(first + 1) % 10, int(second), int(second + 1) % 10)
        if len(set(classes)) < 4:  # overlapping pairs: take the next free digit
            classes = tuple(dict.fromkeys(classes))
            classes += tuple(c for c in range(N_CLASSES) if c not in classes)[: 4 - len(classes)]
        rows = _draw(rng, user_pools, classes, config.rows_per_user)
        spec = fit_table_rkme(X[rows], reduced_set_size=config.reduced_set_size, seed=config.seed)
        users.append(UserTask(j, classes, X[rows], y[rows], spec))
    return learnwares, users


def _error(scores: np.ndarray, y: np.ndarray) -> float:
    labels = scores.argmax(axis=1) if scores.ndim == 2 else scores.reshape(-1).astype(np.int64)
    return float(np.mean(labels != y))


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _publish(client: Any, market: list[MarketLearnware], config: DemoConfig) -> int:
    """Make every learnware ACTIVE in the registry: reuse an earlier run's identical package,
    delete stale demo learnwares, upload the rest and wait for their checks. Returns the
    number uploaded."""
    existing: list[Learnware] = await client.list_learnwares(f'name = "{NAME_PREFIX}"')
    wanted = {lw.name: lw for lw in market}
    for old in existing:
        target = wanted.get(old.semantic.name)
        usable = old.state in (State.ACTIVE, State.PENDING, State.CHECKING)
        if target is not None and not target.id and old.sha256 == target.sha256 and usable:
            target.id = old.id
            continue
        try:  # an earlier version of the demo, or a rejected copy: out of the way
            await client.delete_learnware(old.id)
        except PermissionDenied as exc:
            _say(f"note: cannot delete stale demo learnware {old.id}: {exc.message}")
    uploads = [lw for lw in market if not lw.id]
    for lw in uploads:
        try:
            lw.id = (await client.upload(lw.package, lw.semantic)).id
        except AlreadyExists as exc:  # the registry keeps one learnware per package
            lw.id = learnware_id(exc.resource_name)
    if uploads:
        _say(f"uploaded {len(uploads)} learnware(s); waiting for their checks ...")
    for lw in market:
        settled = await client.wait_checked(lw.id, timeout_s=config.check_timeout_s)
        if settled.state is not State.ACTIVE:
            report = await client.check_report(lw.id)
            why = settled.state_reason or (report.reason if report else "no reason given")
            raise FailedPrecondition(
                f"demo learnware {lw.name} ({lw.id}) is {settled.state.value}: {why}"
            )
    return len(uploads)


def _demo_query() -> search_resources.SemanticQuery:
    return search_resources.SemanticQuery(data_types=["Table"], text=NAME_PREFIX)


async def _wait_indexed(client: Any, ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await client.search(_demo_query(), page_size=max(len(ids), 10) * 2)
        missing = ids - {m.id for m in found.single}
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise FailedPrecondition(
                f"search has not indexed {len(missing)} demo learnware(s) after "
                f"{timeout_s:.0f} s: {', '.join(sorted(missing))}"
            )
        await asyncio.sleep(0.5)


async def run_demo(client: Any, config: DemoConfig) -> DemoResult:
    """The whole demo with an AsyncLearnwareClient; see the module docs."""
    started = time.monotonic()
    _say(f"building the digits market ({config.learnwares} learnwares, {config.users} users) ...")
    market, users = await asyncio.to_thread(build_market, config)
    uploaded = await _publish(client, market, config)
    by_id = {lw.id: lw for lw in market}
    await _wait_indexed(client, set(by_id), config.index_timeout_s)
    _say("all learnwares ACTIVE and indexed; searching and reusing for each user ...")

    outcomes = []
    for user in users:
        # Every learnware on the user's data, in one call through the sandbox.
        everyone = await client.predict(
            [lw.id for lw in market], user.X, strategy=Strategy.AVERAGE_MEAN, member_outputs=True
        )
        outputs = {m.learnware: m.output for m in everyone.members if m.ok}
        if len(outputs) != len(market) or any(o is None for o in outputs.values()):
            raise FailedPrecondition(f"reuse_service did not run every learnware: {everyone}")
        market_errors = [_error(outputs[lw.id], user.y) for lw in market]  # type: ignore[arg-type]
        found = await client.search(
            _demo_query(), user.spec, max_mixture=config.max_mixture, page_size=len(market)
        )
        if not found.single:
            raise FailedPrecondition(
                f"search found nothing for user {user.index}: {found.empty_reason}"
            )
        top1 = found.single[0].id
        reused = tuple(i for i in found.best_ids if i in by_id) or (top1,)
        top = await client.predict(top1, user.X)
        average = await client.predict(reused, user.X, strategy=Strategy.AVERAGE_MEAN)
        selector = await client.predict(
            reused, user.X, strategy=Strategy.JOB_SELECTOR, user_spec=user.spec
        )
        errors = {
            "mean_in_market": float(np.mean(market_errors)),
            "best_in_market": float(np.min(market_errors)),
            "top1_reuse": _error(top.output, user.y),
            "average_ensemble": _error(average.output, user.y),
            "job_selector": _error(selector.output, user.y),
        }
        outcomes.append(UserOutcome(user.index, errors, top1, reused))
        shown = ", ".join(f"{k} {v:.3f}" for k, v in errors.items())
        _say(f"user {user.index} (digits {user.classes}): {shown}")

    table = {key: float(np.mean([o.errors[key] for o in outcomes])) for key in KEYS}
    return DemoResult(
        table=table,
        users=outcomes,
        learnwares=[lw.id for lw in market],
        uploaded=uploaded,
        seconds=time.monotonic() - started,
    )


def format_table(result: DemoResult) -> str:
    lines = [
        f"Digits market: {len(result.learnwares)} learnwares, {len(result.users)} users "
        f"(mean error over users, lower is better; {result.seconds:.0f} s)",
        "",
        "| setting | error |",
        "|---|---|",
    ]
    lines += [f"| {LABELS[key]} | {result.table[key]:.3f} |" for key in KEYS]
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    """`lwdock demo`, with the CLI's error contract (docs/cli.md): every failure, the suite
    not SERVING included, gives its exit code and, with --json, the error object."""
    from lwdock.client.commands import handles_errors

    return handles_errors(_run_demo_command)(args)


def _run_demo_command(args: argparse.Namespace) -> int:
    from lwdock.client.aio import AsyncLearnwareClient
    from lwdock.client.commands import EXIT_OK, emit, timeouts
    from lwdock.client.config import Endpoints
    from lwdock.errors import Unavailable

    config = DemoConfig(
        seed=args.seed,
        learnwares=args.learnwares,
        users=args.users,
        max_mixture=args.max_mixture,
        check_timeout_s=args.wait_timeout,
    )

    async def main() -> DemoResult:
        endpoints = Endpoints.from_settings(
            spec=args.spec_address,
            registry=args.registry_address,
            search=args.search_address,
            reuse=args.reuse_address,
        )
        async with AsyncLearnwareClient(endpoints, "") as probe:  # health needs no token
            ready = await probe.wait_ready(
                timeout_s=max(args.ready_timeout, 180.0) if args.up else args.ready_timeout
            )
        down = [name for name, ok in ready.items() if not ok]
        if down:
            raise Unavailable(
                f"not SERVING: {', '.join(down)} "
                f"({', '.join(getattr(endpoints, n) for n in down)}); start the suite "
                "with `make up` (or `lwdock up`) first",
                reason="SUITE_NOT_SERVING",
            )
        # Only now: a suite started by --up writes the admin token at its first start.
        async with AsyncLearnwareClient(endpoints, args.token, **timeouts(args)) as client:
            return await run_demo(client, config)

    suite = _start_suite() if args.up else None
    try:
        result = asyncio.run(main())
        emit(args, result.to_dict(config), format_table(result))
        if suite is not None:
            _say("the suite keeps serving (lwdock up, default ports); Ctrl-C stops it")
            try:
                suite.wait()
            except KeyboardInterrupt:  # the way to end --up after a demo that worked
                pass
        return EXIT_OK
    finally:
        if suite is not None:
            _stop_suite(suite)


def _start_suite() -> subprocess.Popen[bytes]:
    """`lwdock up` (embedded defaults, LWDOCK_HOME) as a child; its output goes to stderr so
    that stdout keeps the demo's contract."""
    _say("starting the suite (lwdock up) ...")
    return subprocess.Popen([sys.executable, "-m", "lwdock.cli", "up"], stdout=sys.stderr)


def _stop_suite(suite: subprocess.Popen[bytes]) -> None:
    """Ctrl-C reaches the suite too (same process group); otherwise SIGTERM. Either way it
    stops its services and PostgreSQL."""
    stop_processes([suite], timeout_s=30)


def add_demo_command(commands: Any) -> None:
    from lwdock.client.commands import client_options, output_options

    demo = commands.add_parser(
        "demo",
        parents=[client_options(), output_options()],
        help="a digits learnware market against the running suite, with the reference's table",
        description=(__doc__ or "").split("\n\n")[0],
    )
    demo.add_argument(
        "--up",
        action="store_true",
        help="start the suite first (as `lwdock up`), run the demo, keep serving until Ctrl-C",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--learnwares", type=int, default=DemoConfig.learnwares)
    demo.add_argument("--users", type=int, default=DemoConfig.users)
    demo.add_argument("--max-mixture", type=int, default=DemoConfig.max_mixture)
    demo.add_argument(
        "--wait-timeout", type=float, default=DemoConfig.check_timeout_s, help="per check (s)"
    )
    demo.add_argument(
        "--ready-timeout", type=float, default=30.0, help="wait this long for the suite (s)"
    )
    demo.set_defaults(handler=_demo)
