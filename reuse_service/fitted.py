"""Fitted reusers as resources (`reusers/{id}`): fit, keep, predict, delete.

A reuser is fitted from labelled rows and the members' outputs on them, and kept in memory and
on disk under $LWDOCK_HOME/reuse/reusers as `{id}.json` (name, strategy, members, mode, times)
plus `{id}.npz` (the reuser's own `to_arrays()`), read back with allow_pickle=False. Reusers
expire `ttl_s` after creation.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.errors import InvalidArgument, NotFound
from reuse_service.engine import Strategy

NAME = re.compile(r"^reusers/([a-z0-9-]{1,63})$")
FITTED = (Strategy.ENSEMBLE_PRUNING, Strategy.FEATURE_AUGMENT)
MODES = ("classification", "regression")


def reuser_class(strategy: int) -> Any:
    if strategy == Strategy.ENSEMBLE_PRUNING:
        from reuse_service.reusers.ensemble_pruning import EnsemblePruning

        return EnsemblePruning
    if strategy == Strategy.FEATURE_AUGMENT:
        from reuse_service.reusers.feature_augment import FeatureAugment

        return FeatureAugment
    raise InvalidArgument.for_field(
        "config.strategy",
        "must be REUSE_STRATEGY_ENSEMBLE_PRUNING or REUSE_STRATEGY_FEATURE_AUGMENT",
    )


@dataclass
class ReuserRecord:
    name: str
    strategy: int
    learnwares: list[str]
    mode: str
    create_time: float
    expire_time: float


@dataclass
class FittedReuser:
    record: ReuserRecord
    model: Any

    def predict(self, x: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
        if self.record.strategy == Strategy.FEATURE_AUGMENT:
            return np.asarray(self.model.predict(x, outputs))
        return np.asarray(self.model.predict(outputs))


def fit_reuser(
    strategy: int, mode: str, x: np.ndarray, y: np.ndarray, outputs: list[np.ndarray]
) -> Any:
    cls = reuser_class(strategy)
    if strategy == Strategy.FEATURE_AUGMENT:
        return cls.fit(x, outputs, y, mode=mode)
    return cls.fit(outputs, y, mode=mode)


class ReuserStore:
    def __init__(self, root: Path, ttl_s: float = 7 * 24 * 3600.0) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._reusers: dict[str, FittedReuser] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(name: str, field_path: str = "name") -> str:
        match = NAME.match(name)
        if match is None:
            raise InvalidArgument.for_field(field_path, "must look like reusers/{id}")
        return match.group(1)

    def add(self, strategy: int, learnwares: list[str], mode: str, model: Any) -> FittedReuser:
        now = time.time()
        reuser_id = uuid.uuid4().hex
        record = ReuserRecord(
            f"reusers/{reuser_id}", strategy, learnwares, mode, now, now + self.ttl_s
        )
        fitted = FittedReuser(record, model)
        self.root.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in model.to_arrays().items()}
        with open(self.root / f"{reuser_id}.npz", "wb") as out:
            np.savez(out, **arrays)
        (self.root / f"{reuser_id}.json").write_text(json.dumps(asdict(record)))
        with self._lock:
            self._reusers[reuser_id] = fitted
        return fitted

    def get(self, name: str, field_path: str = "name") -> FittedReuser:
        reuser_id = self._id(name, field_path)
        fitted = self._reusers.get(reuser_id) or self._load(reuser_id)
        if fitted is None:
            raise NotFound("Reuser", name)
        if fitted.record.expire_time < time.time():
            self.delete(name)
            raise NotFound("Reuser", name, f"reuser {name!r} has expired")
        return fitted

    def _load(self, reuser_id: str) -> FittedReuser | None:
        meta, data = self.root / f"{reuser_id}.json", self.root / f"{reuser_id}.npz"
        if not meta.is_file() or not data.is_file():
            return None
        record = ReuserRecord(**json.loads(meta.read_text()))
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        fitted = FittedReuser(record, reuser_class(record.strategy).from_arrays(arrays))
        with self._lock:
            self._reusers[reuser_id] = fitted
        return fitted

    def delete(self, name: str) -> None:
        reuser_id = self._id(name)
        with self._lock:
            known = self._reusers.pop(reuser_id, None)
        existed = known is not None
        for suffix in (".json", ".npz"):
            path = self.root / f"{reuser_id}{suffix}"
            if path.exists():
                existed = True
                path.unlink()
        if not existed:
            raise NotFound("Reuser", name)
