"""Prometheus metrics with the go-grpc-prometheus names, so existing dashboards work."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server.", (*_LABELS, "grpc_code")
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC, seconds.",
    _LABELS,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics over HTTP; returns the bound port (port 0 = any free one)."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])
