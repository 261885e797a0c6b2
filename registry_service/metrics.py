"""The registry's own Prometheus metrics (the RPC metrics are lwdock.server.metrics')."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from registry_service.repository import Repository

log = logging.getLogger("lwdock.registry.metrics")

CHECK_QUEUE_DEPTH = Gauge(
    "lwdock_registry_check_queue_depth",
    "Submission check jobs in the queue, by state (QUEUED: waiting; RUNNING: with a checker). "
    "The queue is shared by all registry replicas: aggregate with max(), not sum().",
    ("state",),
)

# How often the gauge is refreshed from PostgreSQL.
CHECK_QUEUE_INTERVAL_S = 5.0


async def refresh_check_queue_depth(repo: Repository) -> dict[str, int]:
    counts = await repo.count_check_jobs()
    for state, n in counts.items():
        CHECK_QUEUE_DEPTH.labels(state).set(n)
    return counts


async def refresh_check_queue_depth_forever(
    repo: Repository, interval_s: float = CHECK_QUEUE_INTERVAL_S
) -> None:
    while True:
        try:
            await refresh_check_queue_depth(repo)
        except Exception as exc:  # database down: keep the last values, try again
            log.debug("check queue depth not refreshed", extra={"error": str(exc)})
        await asyncio.sleep(interval_s)
