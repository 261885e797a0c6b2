"""The semantic part of a learnware as the index keeps it, and the reference's semantic filter.

REFERENCE.md §7.2: Class keys match exactly (the learnware's value must be one of the user's
values), Tag keys intersect, a learnware without a value for a key the user constrains is
rejected unless the user's values include `Others`; the free text is matched against Name and
Description (lowercased): substring first and, only when no learnware matches a substring,
fuzzy with `rapidfuzz.fuzz.partial_ratio >= 75`, best first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.dtypes import StringDType
from rapidfuzz import fuzz, process

FUZZY_MIN_SCORE = 75.0
OTHERS = "Others"


@dataclass(frozen=True)
class SemanticRecord:
    """What search needs of a learnware's semantic specification."""

    data_type: str = ""
    task: str = ""
    library: str = ""
    scenarios: tuple[str, ...] = ()
    license: str = ""
    name: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "data_type": self.data_type,
            "task": self.task,
            "library": self.library,
            "scenarios": list(self.scenarios),
            "license": self.license,
            "name": self.name,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SemanticRecord:
        scenarios = data.get("scenarios") or []
        assert isinstance(scenarios, list)
        return cls(
            data_type=str(data.get("data_type", "")),
            task=str(data.get("task", "")),
            library=str(data.get("library", "")),
            scenarios=tuple(str(s) for s in scenarios),
            license=str(data.get("license", "")),
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
        )


@dataclass(frozen=True)
class SemanticQuery:
    """Empty lists and strings mean no constraint."""

    data_types: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    text: str = ""
    learnware_id: str = ""
    # The Class constraints, by SemanticRecord attribute.
    classes: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        classes = {
            "data_type": frozenset(self.data_types),
            "task": frozenset(self.tasks),
            "library": frozenset(self.libraries),
            "license": frozenset(self.licenses),
        }
        object.__setattr__(self, "classes", {k: v for k, v in classes.items() if v})

    @property
    def is_empty(self) -> bool:
        return not (self.classes or self.scenarios or self.text.strip() or self.learnware_id)

    def keeps_tags(self, record: SemanticRecord) -> bool:
        """The id, Class and Tag rules (everything but the free text)."""
        for attribute, allowed in self.classes.items():
            value = getattr(record, attribute)
            if not value:
                if OTHERS not in allowed:
                    return False
            elif value not in allowed:
                return False
        if self.scenarios:
            if not record.scenarios:
                if OTHERS not in self.scenarios:
                    return False
            elif not set(self.scenarios) & set(record.scenarios):
                return False
        return True


def keeps_id(query: SemanticQuery, learnware_id: str) -> bool:
    return not query.learnware_id or query.learnware_id in learnware_id


def match_text(
    query_text: str, candidates: Sequence[tuple[str, SemanticRecord]]
) -> list[tuple[str, float]]:
    """(learnware_id, score) of the candidates whose Name or Description matches the text.

    Substring matches (score 100, in the given order) when there are any; otherwise fuzzy
    matches with partial_ratio >= 75, best first (stable). An empty text keeps everything.
    """
    return match_lowered_text(
        query_text,
        [learnware_id for learnware_id, _ in candidates],
        [record.name.lower() for _, record in candidates],
        [record.description.lower() for _, record in candidates],
    )


def match_lowered_text(
    query_text: str,
    ids: Sequence[str],
    names: Sequence[str] | np.ndarray,
    descriptions: Sequence[str] | np.ndarray,
) -> list[tuple[str, float]]:
    """`match_text` over the candidates' ids and their lowercased names and descriptions
    (lists or numpy string arrays): the substring test runs in numpy's string ufuncs."""
    q = query_text.strip().lower()
    if not q:
        return [(learnware_id, 100.0) for learnware_id in ids]
    if not len(ids):
        return []
    name_array = np.asarray(names, dtype=StringDType())
    description_array = np.asarray(descriptions, dtype=StringDType())
    hits = (np.strings.find(name_array, q) >= 0) | (np.strings.find(description_array, q) >= 0)
    if hits.any():
        return [(ids[i], 100.0) for i in np.flatnonzero(hits).tolist()]
    scores = [
        process.cdist([q], texts, scorer=fuzz.partial_ratio, dtype="float32", workers=1)[0]
        for texts in (name_array.tolist(), description_array.tolist())
    ]
    best = np.maximum(scores[0], scores[1]).astype(np.float64)
    kept = np.flatnonzero(best >= FUZZY_MIN_SCORE)
    kept = kept[np.argsort(-best[kept], kind="stable")]
    return [(ids[i], float(best[i])) for i in kept.tolist()]


def semantic_filter(
    query: SemanticQuery, records: Iterable[tuple[str, SemanticRecord]]
) -> list[tuple[str, float]]:
    """The reference's semantic stage over (id, record) pairs in market order."""
    kept = [
        (learnware_id, record)
        for learnware_id, record in records
        if keeps_id(query, learnware_id) and query.keeps_tags(record)
    ]
    return match_text(query.text, kept)


_CLASS_FIELDS = ("data_type", "task", "library", "license")
_MAX_SCENARIOS = 64  # distinct scenario values a partition's bit masks can hold


class SemanticColumns:
    """The Class and Tag fields of a partition's learnwares as arrays by slot, so that the
    reference's Class and Tag rules (`SemanticQuery.keeps_tags`) run as array operations
    over a partition instead of a Python loop: each Class field as an int32 code (0 = no
    value) and the scenarios as a 64-bit mask. A partition whose learnwares use more than 64
    distinct scenario values falls back to the records (`keeps` returns None)."""

    def __init__(self) -> None:
        self.vocabulary: dict[str, dict[str, int]] = {f: {"": 0} for f in _CLASS_FIELDS}
        self.codes = {f: np.zeros(0, dtype=np.int32) for f in _CLASS_FIELDS}
        self.scenario_bits: dict[str, int] = {}
        self.scenarios = np.zeros(0, dtype=np.uint64)
        self.overflow = False

    def assign(self, slots: Sequence[int], records: Sequence[SemanticRecord]) -> None:
        if not slots:
            return
        needed = max(slots) + 1
        if needed > self.scenarios.shape[0]:
            size = max(needed, 2 * self.scenarios.shape[0], 64)
            for name, codes in self.codes.items():
                self.codes[name] = np.concatenate([codes, np.zeros(size - codes.size, np.int32)])
            grown = np.zeros(size - self.scenarios.size, np.uint64)
            self.scenarios = np.concatenate([self.scenarios, grown])
        for slot, record in zip(slots, records, strict=True):
            for name in _CLASS_FIELDS:
                vocabulary = self.vocabulary[name]
                value = getattr(record, name)
                self.codes[name][slot] = vocabulary.setdefault(value, len(vocabulary))
            mask = 0
            for scenario in record.scenarios:
                bit = self.scenario_bits.get(scenario)
                if bit is None:
                    if len(self.scenario_bits) == _MAX_SCENARIOS:
                        self.overflow = True
                        continue
                    bit = self.scenario_bits[scenario] = len(self.scenario_bits)
                mask |= 1 << bit
            self.scenarios[slot] = mask

    def kept_slots(
        self,
        query: SemanticQuery,
        slots: np.ndarray,
        record_of: Callable[[int], SemanticRecord],
    ) -> np.ndarray:
        """The slots that pass the query's Class and Tag rules: on the columns or, where the
        scenarios overflowed the masks, on the records (`record_of(slot)`)."""
        if not (query.classes or query.scenarios):
            return slots
        passes = self.keeps(query, slots)
        if passes is None:
            passes = np.fromiter(
                (query.keeps_tags(record_of(s)) for s in slots.tolist()),
                dtype=bool,
                count=slots.size,
            )
        return slots[passes]

    def keeps(self, query: SemanticQuery, slots: np.ndarray) -> np.ndarray | None:
        """Which of the slots pass the query's Class and Tag rules (bool [n]); None when the
        scenarios overflowed the masks (then ask `query.keeps_tags` of the records)."""
        if self.overflow and query.scenarios:
            return None
        kept = np.ones(slots.size, dtype=bool)
        for name, allowed in query.classes.items():
            codes = self.codes[name][slots]
            vocabulary = self.vocabulary[name]
            allowed_codes = [vocabulary[v] for v in allowed if v and v in vocabulary]
            passes = np.isin(codes, allowed_codes)
            if OTHERS in allowed:
                passes |= codes == 0
            kept &= passes
        if query.scenarios:
            wanted = 0
            for scenario in query.scenarios:
                if scenario in self.scenario_bits:
                    wanted |= 1 << self.scenario_bits[scenario]
            masks = self.scenarios[slots]
            passes = (masks & np.uint64(wanted)) != 0
            if OTHERS in query.scenarios:
                passes |= masks == 0
            kept &= passes
        return kept


class SemanticCatalog:
    """Every indexed learnware's semantic record by slot, for searches without a
    specification: the Class and Tag fields as `SemanticColumns`, the lowercased names and
    descriptions as numpy string arrays, and the market order (ids descending, as the
    reference lists its learnwares) cached until the catalog changes. `search` returns what
    `semantic_filter` returns over the records in market order."""

    def __init__(self) -> None:
        self.columns = SemanticColumns()
        self.ids: list[str | None] = []
        self.records: list[SemanticRecord | None] = []
        self.slot_of: dict[str, int] = {}
        self.free: list[int] = []
        self.names = np.zeros(0, dtype=StringDType())
        self.descriptions = np.zeros(0, dtype=StringDType())
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.slot_of)

    def put_many(self, items: Sequence[tuple[str, SemanticRecord]]) -> None:
        """Insert or replace records (the last of an id wins)."""
        slots = []
        for learnware_id, record in items:
            slot = self.slot_of.get(learnware_id)
            if slot is None:
                if self.free:
                    slot = self.free.pop()
                else:
                    slot = len(self.ids)
                    self.ids.append(None)
                    self.records.append(None)
                self.slot_of[learnware_id] = slot
            self.ids[slot] = learnware_id
            self.records[slot] = record
            slots.append(slot)
        if not slots:
            return
        if len(self.ids) > self.names.size:
            size = max(len(self.ids), 2 * self.names.size, 64)
            grown = np.zeros(size - self.names.size, dtype=StringDType())
            self.names = np.concatenate([self.names, grown])
            self.descriptions = np.concatenate([self.descriptions, grown])
        records = [record for _, record in items]
        self.columns.assign(slots, records)
        self.names[slots] = [record.name.lower() for record in records]
        self.descriptions[slots] = [record.description.lower() for record in records]
        self._order = None

    def remove(self, learnware_id: str) -> bool:
        slot = self.slot_of.pop(learnware_id, None)
        if slot is None:
            return False
        self.ids[slot] = None
        self.records[slot] = None
        self.names[slot] = self.descriptions[slot] = ""
        self.free.append(slot)
        self._order = None
        return True

    def _record(self, slot: int) -> SemanticRecord:
        record = self.records[slot]
        assert record is not None
        return record

    def market_order(self) -> np.ndarray:
        """The live slots, ids descending."""
        if self._order is None:
            slots = np.fromiter(self.slot_of.values(), dtype=np.int64, count=len(self.slot_of))
            keys = np.array([self.ids[s] for s in slots.tolist()], dtype=StringDType())
            self._order = slots[np.argsort(keys, kind="stable")[::-1]]
        return self._order

    def search(self, query: SemanticQuery) -> list[tuple[str, float]]:
        slots = self.columns.kept_slots(query, self.market_order(), self._record)
        ids = [self.ids[s] or "" for s in slots.tolist()]
        if query.learnware_id:
            kept = [i for i, learnware_id in enumerate(ids) if keeps_id(query, learnware_id)]
            slots, ids = slots[kept], [ids[i] for i in kept]
        return match_lowered_text(query.text, ids, self.names[slots], self.descriptions[slots])
