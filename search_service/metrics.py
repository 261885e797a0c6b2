"""Prometheus gauges of the index, on the registry lwdock.server.metrics serves."""

from __future__ import annotations

from prometheus_client import Gauge

from search_service.index import SearchIndex

LEARNWARES = Gauge(
    "lwdock_search_index_learnwares", "Learnwares in an index partition.", ("partition",)
)
MEMORY = Gauge(
    "lwdock_search_index_memory_bytes", "Memory held by an index partition.", ("partition",)
)
ACTIVE = Gauge("lwdock_search_active_learnwares", "ACTIVE learnwares the index knows.")
LAST_SEQUENCE = Gauge("lwdock_search_last_sequence", "Last registry change-feed sequence applied.")
SYNCED = Gauge("lwdock_search_synced", "1 while the index has caught up with the registry.")
SYNC_LAG = Gauge(
    "lwdock_search_sync_lag_seconds",
    "0 while synced; otherwise seconds since the index was last caught up.",
)

_published: set[str] = set()


def publish(index: SearchIndex) -> None:
    """Set every gauge from the index (after each applied batch and sync state change)."""
    names = set(index.partitions)
    for name in _published - names:
        LEARNWARES.remove(name)
        MEMORY.remove(name)
    for name, partition in index.partitions.items():
        LEARNWARES.labels(name).set(partition.count)
        MEMORY.labels(name).set(partition.memory_bytes)
    _published.clear()
    _published.update(names)
    ACTIVE.set(index.learnware_count)
    LAST_SEQUENCE.set(index.last_sequence)
    SYNCED.set(1 if index.synced else 0)
    SYNC_LAG.set_function(index.sync_lag_s)
