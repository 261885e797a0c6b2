"""The search index's state as reported by GetIndexStats.

The FAISS partitions and the change-feed follower arrive with the search issue; until then
the index is empty and says it has not synced with the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_EMBEDDING_DIMENSION = 1024
DEFAULT_EMBEDDING_SEED = 0


@dataclass
class Partition:
    key: str
    learnware_ids: set[str] = field(default_factory=set)
    index_type: str = "IDMap,Flat"
    memory_bytes: int = 0


@dataclass
class SearchIndex:
    embedding_dimension: int = DEFAULT_EMBEDDING_DIMENSION
    embedding_seed: int = DEFAULT_EMBEDDING_SEED
    partitions: dict[str, Partition] = field(default_factory=dict)
    last_sequence: int = 0
    synced: bool = False

    @property
    def learnware_count(self) -> int:
        return sum(len(p.learnware_ids) for p in self.partitions.values())
