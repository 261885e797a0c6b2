"""Typed results of the SDK: plain dataclasses made from the services' messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from lwdock.common.v1 import learnware_pb2
from lwdock.registry.v1 import resources_pb2 as registry_resources
from lwdock.reuse.v1 import resources_pb2 as reuse_resources
from lwdock.reuse.v1 import reuse_service_pb2
from lwdock.search.v1 import resources_pb2 as search_resources
from lwdock.search.v1 import search_service_pb2
from lwdock.semantic.checker import Semantic


class State(StrEnum):
    """A learnware's state (`lwdock.common.v1.LearnwareState` without the prefix)."""

    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    CHECKING = "CHECKING"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    DELETED = "DELETED"

    @classmethod
    def from_proto(cls, value: int) -> State:
        name = learnware_pb2.LearnwareState.Name(value).removeprefix("LEARNWARE_STATE_")
        return cls(name)

    @property
    def settled(self) -> bool:
        """True once the check has decided (or the learnware is gone)."""
        return self in (State.ACTIVE, State.REJECTED, State.DELETED)


class Strategy(StrEnum):
    """How several learnwares' outputs are combined (`lwdock.reuse.v1.ReuseStrategy`)."""

    SINGLE = "single"
    AVERAGE_MEAN = "average_mean"
    VOTE_BY_LABEL = "vote_by_label"
    VOTE_BY_PROBABILITY = "vote_by_probability"
    JOB_SELECTOR = "job_selector"
    ENSEMBLE_PRUNING = "ensemble_pruning"
    FEATURE_AUGMENT = "feature_augment"

    @classmethod
    def parse(cls, name: str | Strategy) -> Strategy:
        if isinstance(name, Strategy):
            return name
        key = name.strip().lower().replace("-", "_").removeprefix("reuse_strategy_")
        key = _STRATEGY_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown strategy {name!r}; one of {known}") from None

    def to_proto(self) -> int:
        return reuse_resources.ReuseStrategy.Value(f"REUSE_STRATEGY_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> Strategy | None:
        if value == reuse_resources.REUSE_STRATEGY_UNSPECIFIED:
            return None
        return cls[reuse_resources.ReuseStrategy.Name(value).removeprefix("REUSE_STRATEGY_")]


_STRATEGY_ALIASES = {
    "average": "average_mean",
    "mean": "average_mean",
    "vote": "vote_by_label",
    "vote_by_prob": "vote_by_probability",
    "selector": "job_selector",
    "pruning": "ensemble_pruning",
    "augment": "feature_augment",
}


def learnware_id(name_or_id: str) -> str:
    """`learnwares/{id}` or `{id}` -> `{id}`."""
    return name_or_id.removeprefix("learnwares/")


def learnware_name(name_or_id: str) -> str:
    """`learnwares/{id}` or `{id}` -> `learnwares/{id}`."""
    return f"learnwares/{learnware_id(name_or_id)}"


def _time(message: Any) -> datetime | None:
    return message.ToDatetime() if message is not None and message.seconds else None


@dataclass(frozen=True)
class Learnware:
    id: str
    name: str
    state: State
    state_reason: str
    owner: str
    semantic: Semantic
    sha256: str
    size_bytes: int
    etag: str
    create_time: datetime | None = None
    update_time: datetime | None = None
    specifications: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, message: learnware_pb2.Learnware) -> Learnware:
        return cls(
            id=message.learnware_id or learnware_id(message.name),
            name=message.name,
            state=State.from_proto(message.state),
            state_reason=message.state_reason,
            owner=message.owner,
            semantic=Semantic.from_proto(message.semantic_specification),
            sha256=message.package.sha256,
            size_bytes=message.package.size_bytes,
            etag=message.etag,
            create_time=_time(message.create_time),
            update_time=_time(message.update_time),
            specifications=tuple(s.name for s in message.specifications),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "reason": self.state_reason,
            "owner": self.owner,
            "semantic_name": self.semantic.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }


@dataclass(frozen=True)
class CheckReport:
    """The registry's record of a learnware's submission check."""

    learnware_id: str
    passed: bool
    reason: str
    log: str
    start_time: datetime | None = None
    end_time: datetime | None = None

    @classmethod
    def from_proto(cls, message: registry_resources.CheckReport) -> CheckReport:
        return cls(
            learnware_id=learnware_id(message.name.removesuffix("/checkReport")),
            passed=message.passed,
            reason=message.reason,
            log=message.log,
            start_time=_time(message.start_time),
            end_time=_time(message.end_time),
        )


@dataclass(frozen=True)
class Submission:
    """The outcome of `submit`: the learnware as last seen, and its check report once checked."""

    learnware: Learnware
    report: CheckReport | None = None

    @property
    def id(self) -> str:
        return self.learnware.id

    @property
    def state(self) -> State:
        return self.learnware.state

    @property
    def reason(self) -> str:
        if self.learnware.state_reason:
            return self.learnware.state_reason
        return self.report.reason if self.report is not None else ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state.value, "reason": self.reason}


@dataclass(frozen=True)
class SingleMatch:
    """One learnware ranked by the user's statistical specification (or semantic only)."""

    id: str
    mmd2: float
    score: float
    similarity: float
    learnware: Learnware | None = None

    @classmethod
    def from_proto(cls, message: search_resources.SingleResult) -> SingleMatch:
        return cls(
            id=learnware_id(message.learnware_id),
            mmd2=message.mmd2,
            score=message.score,
            similarity=message.similarity,
            learnware=Learnware.from_proto(message.learnware)
            if message.HasField("learnware")
            else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mmd": self.mmd2, "score": self.score, "similarity": self.similarity}


@dataclass(frozen=True)
class Mixture:
    """The recommended weighted mixture of learnwares."""

    ids: tuple[str, ...]
    weights: tuple[float, ...]
    mmd2: float
    score: float
    similarity: float

    @classmethod
    def from_proto(cls, message: search_resources.MixtureResult) -> Mixture:
        return cls(
            ids=tuple(learnware_id(i) for i in message.learnware_ids),
            weights=tuple(message.weights),
            mmd2=message.mmd2,
            score=message.score,
            similarity=message.similarity,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "weights": list(self.weights),
            "mmd": self.mmd2,
            "score": self.score,
            "similarity": self.similarity,
        }


@dataclass(frozen=True)
class SearchResult:
    single: tuple[SingleMatch, ...]
    mixture: Mixture | None
    candidate_count: int = 0
    empty_reason: str = ""
    next_page_token: str = ""

    @classmethod
    def from_proto(cls, message: search_service_pb2.SearchLearnwaresResponse) -> SearchResult:
        return cls(
            single=tuple(SingleMatch.from_proto(r) for r in message.single_results),
            mixture=Mixture.from_proto(message.mixture) if message.HasField("mixture") else None,
            candidate_count=message.candidate_count,
            empty_reason=message.empty_reason,
            next_page_token=message.next_page_token,
        )

    @property
    def best_ids(self) -> tuple[str, ...]:
        """The mixture's learnwares, else the best single one, else nothing (what the
        reference's workflow reuses)."""
        if self.mixture is not None and self.mixture.ids:
            return self.mixture.ids
        return (self.single[0].id,) if self.single else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "single": [s.to_dict() for s in self.single],
            "mixture": self.mixture.to_dict() if self.mixture is not None else None,
            "candidate_count": self.candidate_count,
            "empty_reason": self.empty_reason,
        }


@dataclass(frozen=True)
class MemberOutcome:
    """What one learnware of a multi-learnware call did."""

    learnware: str
    ok: bool
    code: str
    message: str
    output: np.ndarray | None = None


@dataclass(frozen=True)
class Prediction:
    output: np.ndarray
    strategy: Strategy | None
    members: tuple[MemberOutcome, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return int(self.output.shape[0]) if self.output.ndim else 0

    @classmethod
    def from_proto(cls, message: reuse_service_pb2.PredictResponse) -> Prediction:
        from google.rpc import code_pb2

        from lwdock.tensors import to_numpy

        members = []
        for m in message.members:
            code = m.status.code if m.HasField("status") else 0
            members.append(
                MemberOutcome(
                    learnware=learnware_id(m.learnware),
                    ok=code == 0,
                    code=code_pb2.Code.Name(code) if code in code_pb2.Code.values() else str(code),
                    message=m.status.message,
                    output=to_numpy(m.output, "output") if m.HasField("output") else None,
                )
            )
        return cls(
            output=to_numpy(message.output, "output"),
            strategy=Strategy.from_proto(message.strategy),
            members=tuple(members),
        )


@dataclass(frozen=True)
class Reuser:
    """A reuser fitted on labelled data (ensemble pruning, feature augmentation)."""

    name: str
    strategy: Strategy | None
    learnwares: tuple[str, ...]
    mode: str
    create_time: datetime | None = None
    expire_time: datetime | None = None

    @classmethod
    def from_proto(cls, message: reuse_resources.Reuser) -> Reuser:
        return cls(
            name=message.name,
            strategy=Strategy.from_proto(message.strategy),
            learnwares=tuple(learnware_id(i) for i in message.learnwares),
            mode=message.mode,
            create_time=_time(message.create_time),
            expire_time=_time(message.expire_time),
        )
