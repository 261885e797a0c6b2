"""Running learnwares for users: resolve them in the registry, fetch and unpack their
packages, run them in pooled sandbox workers, and combine their outputs with a strategy.
Plain Python on numpy arrays; the servicers convert messages around it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.common.v1 import learnware_pb2
from lwdock.errors import (
    FailedPrecondition,
    InvalidArgument,
    LearnwareModelFailed,
    LwdockError,
    PreconditionViolation,
)
from lwdock.registry_client import RegistryClient, learnware_name
from lwdock.rkme.spec import RKMESpec
from lwdock.semantic.checker import Semantic
from reuse_service.packages import Package, PackageStore, require_runtime
from reuse_service.runtime import RuntimeState
from reuse_service.sandbox import (
    SANDBOX_PACKAGE_DIR,
    SandboxLimits,
    bwrap_argv,
    unsandboxed_argv,
)
from reuse_service.workers import WorkerPool, WorkerSpec

log = logging.getLogger("lwdock.reuse")

ACTIVE = learnware_pb2.LEARNWARE_STATE_ACTIVE
MAX_MEMBERS = 32
SELECTOR_CACHE = 16


class Strategy:
    """lwdock.reuse.v1.ReuseStrategy values (kept free of the generated module)."""

    SINGLE = 1
    AVERAGE_MEAN = 2
    VOTE_BY_LABEL = 3
    VOTE_BY_PROBABILITY = 4
    JOB_SELECTOR = 5
    ENSEMBLE_PRUNING = 6
    FEATURE_AUGMENT = 7

    NAMES = {1: "SINGLE", 2: "AVERAGE_MEAN", 3: "VOTE_BY_LABEL", 4: "VOTE_BY_PROBABILITY",
             5: "JOB_SELECTOR", 6: "ENSEMBLE_PRUNING", 7: "FEATURE_AUGMENT"}  # fmt: skip
    STATELESS = (SINGLE, AVERAGE_MEAN, VOTE_BY_LABEL, VOTE_BY_PROBABILITY, JOB_SELECTOR)


@dataclass
class Member:
    name: str
    learnware: learnware_pb2.Learnware | None
    package: Package


@dataclass
class MemberOutcome:
    name: str
    output: np.ndarray | None = None
    error: LwdockError | None = None


@dataclass
class PredictResult:
    output: np.ndarray
    strategy: int
    members: list[MemberOutcome] = field(default_factory=list)


def table_input_check(member: Member, x: np.ndarray, field_path: str = "input") -> None:
    shape = member.package.validated.input_shape
    if x.ndim < 1 or x.shape[0] == 0:
        raise InvalidArgument.for_field(f"{field_path}.shape", "needs at least one row")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise InvalidArgument.for_field(
            f"{field_path}.shape",
            f"rows of shape {list(x.shape[1:])} do not fit {member.name}, which takes "
            f"{list(shape)}",
        )


def _no_duplicate(seen: dict[str, int], name: str, index: int) -> None:
    if name in seen:
        raise InvalidArgument.for_field(
            f"learnwares.learnwares[{index}]",
            f"{name} is already learnwares[{seen[name]}]; name each learnware once",
        )
    seen[name] = index


class ReuseEngine:
    def __init__(
        self,
        state: RuntimeState,
        limits: SandboxLimits,
        packages: PackageStore,
        pool: WorkerPool,
        registry: RegistryClient,
        *,
        bwrap: str | None = None,
    ) -> None:
        self.state = state
        self.limits = limits
        self.packages = packages
        self.pool = pool
        self.registry = registry
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self._selectors: OrderedDict[str, Any] = OrderedDict()

    # -- sandbox --------------------------------------------------------------------------

    def require_sandbox(self) -> None:
        if self.state.sandbox.available or self.state.allow_unsandboxed:
            return
        reason = self.state.sandbox.reason or "no sandbox"
        raise FailedPrecondition(
            f"model code cannot run on this host: {reason} (an operator may allow unsandboxed "
            "runs for development with LWDOCK_ALLOW_UNSANDBOXED=true)",
            [PreconditionViolation("SANDBOX", "reuse_service", reason)],
            reason="SANDBOX_UNAVAILABLE",
        )

    def worker_spec(self, package: Package, learnware: str) -> WorkerSpec:
        if self.state.sandbox.available:
            argv, uid = bwrap_argv(
                self.bwrap, package.files, as_root=os.geteuid() == 0, limits=self.limits
            )
            init = package.runner_init(SANDBOX_PACKAGE_DIR)
            new_session = False
        else:  # allowed explicitly (checked by require_sandbox)
            argv, uid = unsandboxed_argv(), None
            init = package.runner_init(str(package.files))
            new_session = True
        init["limits"] = self.limits.runner_limits()
        if not self.state.sandbox.available:
            # Outside a sandbox RLIMIT_NPROC would count every process of the service's user.
            init["limits"].pop("nproc")
        init["drop_to_uid"] = uid
        # Inside its own PID namespace the runner may kill whatever the learnware left running.
        init["reap_strays"] = self.state.sandbox.available
        return WorkerSpec(package.sha256, learnware, argv, init, self.limits, new_session)

    # -- members --------------------------------------------------------------------------

    async def package_for(self, learnware: learnware_pb2.Learnware, timeout_s: float) -> Package:
        semantic = Semantic.from_proto(learnware.semantic_specification)
        sha256 = learnware.package.sha256
        package = await asyncio.to_thread(self.packages.cached, sha256, semantic)
        if package is None:
            data = await self.registry.download(learnware, timeout_s)
            package = await asyncio.to_thread(self.packages.add, data, semantic, sha256)
        return package

    async def member(self, name: str, timeout_s: float, field_path: str) -> Member:
        if not name.strip():
            raise InvalidArgument.for_field(field_path, "names no learnware")
        learnware = await self.registry.get(learnware_name(name), timeout_s)
        if learnware.state != ACTIVE:
            state = learnware_pb2.LearnwareState.Name(learnware.state)
            raise FailedPrecondition(
                f"{learnware.name} is {state.removeprefix('LEARNWARE_STATE_')}, not ACTIVE; "
                "only checked learnwares run",
                [PreconditionViolation("STATE", learnware.name, "not ACTIVE")],
                reason="LEARNWARE_NOT_ACTIVE",
            )
        package = await self.package_for(learnware, timeout_s)
        require_runtime(package)
        return Member(learnware.name, learnware, package)

    async def members(self, names: Sequence[str], timeout_s: float) -> list[Member]:
        if not names:
            raise InvalidArgument.for_field("learnwares.learnwares", "name at least one learnware")
        if len(names) > MAX_MEMBERS:
            raise InvalidArgument.for_field(
                "learnwares.learnwares", f"at most {MAX_MEMBERS} learnwares per call"
            )
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            _no_duplicate(first, learnware_name(name.strip()), i)
        members = list(
            await asyncio.gather(
                *(
                    self.member(n, timeout_s, f"learnwares.learnwares[{i}]")
                    for i, n in enumerate(names)
                )
            )
        )
        resolved: dict[str, int] = {}
        for i, member in enumerate(members):  # two spellings of one learnware
            _no_duplicate(resolved, member.name, i)
        return members

    async def run(self, member: Member, x: np.ndarray, timeout_s: float) -> np.ndarray:
        """One member's output on x, from its warm sandbox worker."""
        self.require_sandbox()
        if x.dtype.hasobject:  # strings from a STRING tensor: fixed-width unicode, no pickles
            x = x.astype(str)
        output = await self.pool.run(
            lambda: self.worker_spec(member.package, member.name),
            member.package.sha256,
            x,
            timeout_s,
        )
        if output.ndim == 0 or output.shape[0] != x.shape[0]:
            raise LearnwareModelFailed(
                member.name,
                f"{member.name} returned shape {list(output.shape)} for {x.shape[0]} rows",
            )
        return output

    async def run_all(
        self, members: Sequence[Member], x: np.ndarray, timeout_s: float
    ) -> list[MemberOutcome]:
        async def one(member: Member) -> MemberOutcome:
            try:
                return MemberOutcome(member.name, await self.run(member, x, timeout_s))
            except LwdockError as error:
                return MemberOutcome(member.name, error=error)

        return list(await asyncio.gather(*(one(m) for m in members)))

    # -- strategies -----------------------------------------------------------------------

    async def predict(
        self,
        names: Sequence[str],
        weights: Sequence[float],
        strategy: int,
        x: np.ndarray,
        user_spec: RKMESpec | None,
        timeout_s: float,
    ) -> PredictResult:
        self.require_sandbox()
        if strategy == 0:
            strategy = Strategy.SINGLE if len(names) == 1 else Strategy.AVERAGE_MEAN
        if strategy not in Strategy.STATELESS:
            raise InvalidArgument.for_field(
                "strategy",
                f"{Strategy.NAMES.get(strategy, strategy)} needs labelled data: create a reuser "
                "(CreateReuser) and predict with it",
            )
        if strategy == Strategy.SINGLE and len(names) != 1:
            raise InvalidArgument.for_field("strategy", "SINGLE takes exactly one learnware")
        if weights and len(weights) != len(names):
            raise InvalidArgument.for_field(
                "learnwares.weights", f"{len(weights)} weights for {len(names)} learnwares"
            )
        if weights and (not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0):
            raise InvalidArgument.for_field(
                "learnwares.weights", "must be finite, >= 0 and not all 0"
            )
        members = await self.members(names, timeout_s)
        for member in members:
            table_input_check(member, x)
        if strategy == Strategy.JOB_SELECTOR:
            return await self._job_selector(members, x, user_spec, list(weights), timeout_s)
        outcomes = await self.run_all(members, x, timeout_s)
        good = [o for o in outcomes if o.output is not None]
        if not good:
            first = outcomes[0].error
            assert first is not None
            raise first
        if strategy == Strategy.SINGLE:
            return PredictResult(good[0].output, strategy, outcomes)  # type: ignore[arg-type]
        outputs = [o.output for o in good]
        kept = None
        if weights:
            pairs = zip(weights, outcomes, strict=True)
            kept = [float(w) for w, o in pairs if o.output is not None]
            if sum(kept) <= 0:
                failed = [o for o in outcomes if o.error is not None]
                raise FailedPrecondition(
                    "every learnware that answered has weight 0, and the weighted ones failed: "
                    + "; ".join(f"{o.name}: {o.error.message}" for o in failed if o.error),
                    [
                        PreconditionViolation("MEMBER_FAILED", o.name, o.error.message)
                        for o in failed
                        if o.error
                    ],
                    reason="NO_WEIGHTED_LEARNWARE_ANSWERED",
                )
        output = combine(strategy, outputs, kept)
        return PredictResult(output, strategy, outcomes)

    async def _job_selector(
        self,
        members: list[Member],
        x: np.ndarray,
        user_spec: RKMESpec | None,
        weights: list[float],
        timeout_s: float,
    ) -> PredictResult:
        """Route each row to one member (the reusers' JobSelector, fitted once per member set,
        user spec and weights, then cached); each member runs once on its rows."""
        from reuse_service.reusers.job_selector import JobSelector

        specs = []
        for i, member in enumerate(members):
            spec = member.package.table_spec
            if spec is None:
                raise InvalidArgument.for_field(
                    f"learnwares.learnwares[{i}]", "the job selector needs a table RKME spec"
                )
            specs.append(spec)
        key = hashlib.sha256(
            "|".join(m.package.sha256 for m in members).encode()
            + (user_spec.to_reference_json().encode() if user_spec is not None else b"")
            + repr(weights).encode()
        ).hexdigest()
        selector = self._selectors.get(key)
        if selector is None:
            selector = await asyncio.to_thread(
                JobSelector.fit, specs, user_spec=user_spec, weights=weights or None
            )
            self._selectors[key] = selector
            while len(self._selectors) > SELECTOR_CACHE:
                self._selectors.popitem(last=False)
        self._selectors.move_to_end(key)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        outputs: dict[int, np.ndarray] = {}

        def predict_member(i: int, rows: np.ndarray) -> np.ndarray:
            left = max(0.1, end - loop.time())
            future = asyncio.run_coroutine_threadsafe(self.run(members[i], rows, left), loop)
            outputs[i] = future.result()
            return outputs[i]

        output = await asyncio.to_thread(selector.predict, x, predict_member)
        outcomes = [MemberOutcome(m.name, outputs.get(i)) for i, m in enumerate(members)]
        return PredictResult(np.asarray(output), Strategy.JOB_SELECTOR, outcomes)


def combine(strategy: int, outputs: list[np.ndarray], weights: list[float] | None) -> np.ndarray:
    """The averaging reusers on the members that answered (weights only for AVERAGE_MEAN)."""
    from reuse_service.reusers import averaging

    if strategy == Strategy.AVERAGE_MEAN:
        if weights is None:
            return averaging.average_mean(outputs)
        # Weighted: the same per-column mean, with the caller's (e.g. mixture) weights.
        columns = [o.reshape(len(o), -1).astype(np.float64) for o in outputs]
        widths = {c.shape[1] for c in columns}
        if len(widths) != 1:
            averaging.average_mean(outputs)  # raises the field error for the mismatch
        mean = np.average(np.stack(columns), axis=0, weights=np.asarray(weights, np.float64))
        return mean[:, 0] if all(o.ndim == 1 for o in outputs) else mean
    if strategy == Strategy.VOTE_BY_LABEL:
        return averaging.vote_by_label(outputs)
    if strategy == Strategy.VOTE_BY_PROBABILITY:
        return averaging.vote_by_probability(outputs)
    raise InvalidArgument.for_field("strategy", f"unknown strategy {strategy}")


def reuse_home(home: Path) -> Path:
    return home / "reuse"
