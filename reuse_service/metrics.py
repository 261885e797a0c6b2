"""Prometheus metrics of the sandbox workers (same registry as lwdock.server.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WORKERS = Gauge("lwdock_reuse_sandbox_workers", "Warm sandbox workers now alive.")
WORKER_STARTS = Counter(
    "lwdock_reuse_sandbox_worker_starts_total", "Sandbox workers started.", ("outcome",)
)
WORKER_KILLS = Counter(
    "lwdock_reuse_sandbox_worker_kills_total",
    "Sandbox workers stopped, by reason (evicted, deadline, died, output_too_large, shutdown).",
    ("reason",),
)
MEMBER_CALLS = Counter(
    "lwdock_reuse_member_calls_total", "Learnware predict calls in sandboxes.", ("outcome",)
)
