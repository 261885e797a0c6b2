"""The search index: ACTIVE learnwares by partition, and search over them (plain Python).

`SearchIndex` holds the semantic record of every ACTIVE learnware (semantic search needs no
statistical spec) and one `Partition` per comparable feature space. `apply` takes one change
of the registry's feed; `search` runs the reference's pipeline: semantic filter, then the
statistical ranking (FAISS candidates re-ranked by exact squared MMD), the greedy mixture and
the scores (see `scoring`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lwdock.errors import InvalidArgument
from lwdock.rkme.embedding import MAX_DIMENSION
from lwdock.rkme.kernel import inner_product
from lwdock.rkme.spec import RKMESpec, SpecType
from search_service.mixture import DEFAULT_MAX_MIXTURE, greedy_mixture
from search_service.partition import (
    EXACT_MIN,
    FLAT_MAX,
    RESCORE_DIMENSION,
    Partition,
    PartitionKey,
    Ranked,
    UserSpec,
    partition_key,
)
from search_service.rwlock import ReadWriteLock
from search_service.scoring import DistanceSummary, reference_score, similarity
from search_service.semantic import (
    SemanticCatalog,
    SemanticQuery,
    SemanticRecord,
    keeps_id,
    match_text,
)

DEFAULT_EMBEDDING_DIMENSION = 256
DEFAULT_EMBEDDING_SEED = 0
# Learnwares re-ranked exactly per query, at least (the page and EXACT_EXTRA more, at least).
DEFAULT_CANDIDATES = EXACT_MIN
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class LearnwareEntry:
    """An ACTIVE learnware as the index takes it."""

    learnware_id: str
    semantic: SemanticRecord
    specs: tuple[RKMESpec, ...] = ()


@dataclass(frozen=True)
class SearchRequest:
    semantic: SemanticQuery = field(default_factory=SemanticQuery)
    spec: RKMESpec | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    max_mixture: int = DEFAULT_MAX_MIXTURE


@dataclass(frozen=True)
class SingleHit:
    learnware_id: str
    mmd2: float = 0.0
    score: float = 0.0
    similarity: float = 0.0


@dataclass(frozen=True)
class MixtureHit:
    learnware_ids: tuple[str, ...]
    weights: tuple[float, ...]
    mmd2: float
    score: float
    similarity: float


@dataclass
class SearchResult:
    singles: list[SingleHit]
    mixture: MixtureHit | None = None
    candidate_count: int = 0
    empty_reason: str = ""
    has_more: bool = False


@dataclass
class SearchIndex:
    embedding_dimension: int = DEFAULT_EMBEDDING_DIMENSION
    embedding_seed: int = DEFAULT_EMBEDDING_SEED
    rescore_dimension: int = RESCORE_DIMENSION
    candidates: int = DEFAULT_CANDIDATES
    flat_max: int = FLAT_MAX
    records: dict[str, SemanticRecord] = field(default_factory=dict)
    # the same records by slot, as arrays, for searches without a specification
    catalog: SemanticCatalog = field(default_factory=SemanticCatalog, repr=False, compare=False)
    partitions: dict[str, Partition] = field(default_factory=dict)
    placement: dict[str, tuple[str, ...]] = field(default_factory=dict)
    last_sequence: int = 0
    synced: bool = False
    # time.monotonic() when the index was last known to be caught up; None = never.
    synced_at: float | None = None
    changes: int = 0  # applied changes, for snapshots
    # Searches read together (threads); changes write alone.
    lock: ReadWriteLock = field(default_factory=ReadWriteLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.embedding_dimension <= self.rescore_dimension <= MAX_DIMENSION:
            raise InvalidArgument.for_field(
                "search_rescore_dimension",
                f"the embedding dimensions must satisfy 1 <= FAISS ({self.embedding_dimension})"
                f" <= re-scoring ({self.rescore_dimension}) <= {MAX_DIMENSION}",
            )

    @property
    def learnware_count(self) -> int:
        return len(self.records)

    def sync_lag_s(self) -> float:
        """0 while caught up; else seconds since the index was last caught up (or created)."""
        if self.synced:
            return 0.0
        return time.monotonic() - (self.synced_at if self.synced_at is not None else _STARTED)

    # -- changes ------------------------------------------------------------------------------

    def partition_for(self, spec: RKMESpec) -> Partition:
        key = partition_key(spec)
        name = str(key)
        partition = self.partitions.get(name)
        if partition is None:
            partition = self.new_partition(key)
            self.partitions[name] = partition
        return partition

    def new_partition(self, key: PartitionKey) -> Partition:
        return Partition(
            key,
            self.embedding_dimension,
            self.embedding_seed,
            flat_max=self.flat_max,
            rescore_dimension=self.rescore_dimension,
        )

    def remove(self, learnware_id: str) -> bool:
        with self.lock.writing():
            return self._remove(learnware_id)

    def _remove(self, learnware_id: str) -> bool:
        known = self.records.pop(learnware_id, None) is not None
        self.catalog.remove(learnware_id)
        for name in self.placement.pop(learnware_id, ()):
            partition = self.partitions[name]
            partition.remove(learnware_id)
            partition.rebuild_if_needed()
            if partition.count == 0:
                del self.partitions[name]
        return known

    def upsert_many(self, entries: Sequence[LearnwareEntry]) -> None:
        """Insert or replace learnwares; specs are embedded in one batch per partition."""
        with self.lock.writing():
            self._upsert_many(entries)

    def _upsert_many(self, entries: Sequence[LearnwareEntry]) -> None:
        latest = list({entry.learnware_id: entry for entry in entries}.values())
        semantic = {entry.learnware_id: entry.semantic for entry in latest}
        for entry in latest:
            self._remove(entry.learnware_id)
        grouped: dict[str, list[tuple[str, RKMESpec]]] = {}
        placements: list[tuple[LearnwareEntry, tuple[str, ...]]] = []
        for entry in latest:
            names: list[str] = []
            for spec in entry.specs:
                name = str(self.partition_for(spec).key)
                if name in names:  # one spec per feature space: the first
                    continue
                names.append(name)
                grouped.setdefault(name, []).append((entry.learnware_id, spec))
            placements.append((entry, tuple(names)))
        for name, items in grouped.items():
            self.partitions[name].add_many(items, [semantic[i] for i, _ in items])
        # recorded only once indexed: a failure above leaves no learnware half-known
        for entry, names in placements:
            self.records[entry.learnware_id] = entry.semantic
            self.placement[entry.learnware_id] = names
        self.catalog.put_many([(entry.learnware_id, entry.semantic) for entry in latest])
        self.changes += len(entries)

    def apply(self, sequence: int, learnware_id: str, entry: LearnwareEntry | None) -> None:
        """One change of the feed: `entry` for an ACTIVE learnware, None for any other state."""
        if sequence <= self.last_sequence:
            return  # already applied (a replay after a reconnect)
        with self.lock.writing():
            if entry is None:
                if self._remove(learnware_id):
                    self.changes += 1
            else:
                self._upsert_many([entry])
            self.last_sequence = sequence

    def apply_many(self, changes: Sequence[tuple[int, str, LearnwareEntry | None]]) -> None:
        """`apply` for a batch in feed order; runs of ACTIVE learnwares are embedded together."""
        with self.lock.writing():
            # last_sequence moves only past changes really applied: if applying a run fails,
            # the follower resumes before it (upserts and removals are idempotent)
            run: list[LearnwareEntry] = []
            run_end = self.last_sequence
            for sequence, learnware_id, entry in changes:
                if sequence <= max(self.last_sequence, run_end):
                    continue
                if entry is not None:
                    run.append(entry)
                    run_end = sequence
                    continue
                if run:
                    self._upsert_many(run)
                    run = []
                    self.last_sequence = run_end
                if self._remove(learnware_id):
                    self.changes += 1
                self.last_sequence = run_end = sequence
            if run:
                self._upsert_many(run)
                self.last_sequence = run_end

    # -- search -------------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> SearchResult:
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument.for_field("page_size", f"must be in [0, {MAX_PAGE_SIZE}]")
        if request.offset < 0:
            raise InvalidArgument.for_field("page_token", "invalid page token")
        if request.max_mixture < 0:
            raise InvalidArgument.for_field("max_mixture", "must be >= 0")
        with self.lock.reading():
            if request.spec is None:
                return self._semantic_search(request.semantic, page_size, request.offset)
            return self._statistical_search(request, page_size)

    def reset_records(self, records: dict[str, SemanticRecord]) -> None:
        """Replace every semantic record (a snapshot being loaded)."""
        self.records = records
        self.catalog = SemanticCatalog()
        self.catalog.put_many(list(records.items()))

    def _semantic_search(self, query: SemanticQuery, page_size: int, offset: int) -> SearchResult:
        matches = self.catalog.search(query)
        page = matches[offset : offset + page_size]
        reason = "" if matches else _no_semantic_match(query, len(self.records))
        return SearchResult(
            singles=[SingleHit(learnware_id) for learnware_id, _ in page],
            candidate_count=len(matches),
            empty_reason=reason,
            has_more=offset + page_size < len(matches),
        )

    def _statistical_search(self, request: SearchRequest, page_size: int) -> SearchResult:
        spec = request.spec
        assert spec is not None
        user_self = inner_product(spec, spec)
        if not math.isfinite(user_self):
            raise InvalidArgument.for_field(
                "statistical_specification", "the specification's self inner product is not finite"
            )
        key = partition_key(spec)
        partition = self.partitions.get(str(key))
        if partition is None or partition.count == 0:
            return SearchResult(
                singles=[],
                empty_reason=f"no ACTIVE learnware has a statistical specification in this "
                f"feature space ({key}); feature spaces indexed: "
                + (", ".join(sorted(self.partitions)) or "none"),
            )
        keep = self._filter(partition, request.semantic, spec)
        if keep is not None and keep.size == 0:
            return SearchResult(
                singles=[],
                empty_reason=f"no learnware in the feature space {key} matches the semantic "
                "query" + (" and the specification's languages" if spec.language else ""),
            )
        user = UserSpec(spec, user_self)
        if partition.key.embeddable:
            user.fine, user.vector = partition.user_vectors(spec)
        # The mixture's candidates are the max_mixture^2 best singles (as the reference's):
        # those are ranked exactly too (their order within the pool does not matter).
        pool_size = request.max_mixture**2 if request.max_mixture > 1 and not request.offset else 0
        ranked = partition.search(
            user,
            keep,
            needed=request.offset + page_size,
            pool=pool_size,
            exact_min=self.candidates,
        )
        summary = DistanceSummary(ranked.minimum, ranked.maximum, ranked.mean, ranked.count)

        mixture: MixtureHit | None = None
        mix = None
        if pool_size and ranked.mmd2.size > 1 and ranked.mmd2[0] > 0:
            pool, known = _mixture_pool(ranked, pool_size)
            mix = greedy_mixture(
                partition.self_products[pool],
                lambda positions: partition.exact_cross(user, pool[positions]),
                lambda rows, positions: partition.gram_block(pool[rows], pool[positions]),
                user_self,
                max_members=request.max_mixture,
                known_cross=known,
            )
            if mix is not None and len(mix.members) > 1:
                summary = summary.with_distance(float(partition.score_distances(mix.mmd2)))
            else:
                mix = None

        offset = request.offset
        page = slice(offset, offset + page_size)
        singles = [
            SingleHit(
                learnware_id=partition.ids[slot] or "",
                mmd2=float(d),
                score=reference_score(float(scored), summary),
                similarity=similarity(float(c), user_self, float(partition.self_products[slot])),
            )
            for slot, d, scored, c in zip(
                ranked.slots[page].tolist(),
                ranked.mmd2[page].tolist(),
                partition.score_distances(ranked.mmd2[page]).tolist(),
                ranked.cross[page].tolist(),
                strict=True,
            )
        ]
        if mix is not None:
            score = reference_score(float(partition.score_distances(mix.mmd2)), summary)
            best_single = reference_score(float(partition.score_distances(ranked.mmd2[0])), summary)
            if int(100 * score) != int(100 * best_single):
                mixture = MixtureHit(
                    learnware_ids=tuple(partition.ids[pool[i]] or "" for i in mix.members),
                    weights=mix.weights,
                    mmd2=mix.mmd2,
                    score=score,
                    similarity=similarity(mix.cross, user_self, mix.self_product),
                )
        return SearchResult(
            singles=singles,
            mixture=mixture,
            candidate_count=ranked.count,
            has_more=offset + page_size < ranked.count,
        )

    def _filter(
        self, partition: Partition, query: SemanticQuery, spec: RKMESpec
    ) -> np.ndarray | None:
        """Slots of the partition that pass the semantic query (and, for text specs, whose
        languages include the user's); None = all of them (also when every one passes). The
        Class and Tag rules run on the partition's semantic columns; the id, language and
        text rules on what passes."""
        languages = frozenset(spec.language) if spec.type is SpecType.TEXT else frozenset()
        if query.is_empty and not languages:
            return None
        slots = partition.live_slots()
        slots = partition.semantics.kept_slots(
            query, slots, lambda slot: self.records[partition.ids[slot] or ""]
        )
        if query.learnware_id or languages:
            slots = np.array(
                [
                    s
                    for s in slots.tolist()
                    if keeps_id(query, partition.ids[s] or "")
                    and languages <= partition.languages[s]
                ],
                dtype=np.int64,
            )
        if query.text.strip():
            kept = [(partition.ids[s] or "", self.records[partition.ids[s] or ""]) for s in slots]
            matched = (partition.slot_of[i] for i, _ in match_text(query.text, kept))
            slots = np.array(sorted(matched), dtype=np.int64)
        # A filter that keeps the whole partition (Data = Table over a table partition, the
        # usual query) filters nothing: the unfiltered path (FAISS, no scan) serves it.
        return None if slots.size == partition.count else slots


def _mixture_pool(ranked: Ranked, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The mixture's candidates: the `size` nearest learnwares by exact squared MMD where
    known, else by the fine-embedding estimate; with their exact cross terms (NaN where not
    computed)."""
    slots = np.concatenate([ranked.slots, ranked.rest])
    distance = np.concatenate([ranked.mmd2, ranked.rest_estimate])
    cross = np.concatenate([ranked.cross, np.full(ranked.rest.size, np.nan)])
    order = np.argsort(distance, kind="stable")[:size]
    return slots[order], cross[order]


def _no_semantic_match(query: SemanticQuery, total: int) -> str:
    if total == 0:
        return "the index holds no ACTIVE learnware"
    return "no ACTIVE learnware matches the semantic query"


_STARTED = time.monotonic()
