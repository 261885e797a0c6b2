"""`lwdock up`: the whole suite on one machine with embedded defaults.

Starts an embedded PostgreSQL under LWDOCK_HOME (unless LWDOCK_DATABASE_URL is given), a
local blob directory, a local admin token, and the four services as separate processes on
127.0.0.1; prints where each listens; on Ctrl-C or SIGTERM stops the services gracefully,
then PostgreSQL, leaving no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.embedded_db import EmbeddedPostgres
from lwdock.settings import DEFAULT_PORTS
from lwdock.tokens import ensure_admin_token

SERVICES: dict[str, tuple[str, list[str]]] = {
    "spec": ("spec_service", ["lwdock.spec.v1.SpecService"]),
    "registry": ("registry_service", ["lwdock.registry.v1.RegistryService"]),
    "search": ("search_service", ["lwdock.search.v1.SearchService"]),
    "reuse": ("reuse_service", ["lwdock.reuse.v1.ReuseService", "inference.GRPCInferenceService"]),
}
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 7.0


@dataclass
class SuiteOptions:
    home: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    database_url: str | None = None


def _say(message: str) -> None:
    print(message, flush=True)


def _wait_serving(
    address: str, services: list[str], deadline: float, give_up: Callable[[], bool]
) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", *services]:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or give_up():
                    return False
                try:
                    response = stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=min(2, remaining)
                    )
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
    return True


def stop_processes(
    processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM each running process, wait up to `timeout_s` in all, then kill what is left."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_suite(options: SuiteOptions) -> int:
    home = options.home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    # A plain flag: taking a lock (threading.Event.set) inside a signal handler can deadlock
    # with the main thread waiting on the same lock.
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))

    # Local state first, so nothing can fail between starting PostgreSQL and the `try` that
    # stops it.
    blob_dir = home / "blobs"
    blob_dir.mkdir(exist_ok=True)
    tokens_file, admin_token_file = ensure_admin_token(home)
    database: EmbeddedPostgres | None = None
    database_url = options.database_url
    if not database_url:
        _say(f"starting embedded PostgreSQL in {home / 'postgres'} ...")
        database = EmbeddedPostgres.start(home / "postgres")
        database_url = database.url

    addresses = {name: f"{options.host}:{options.ports[name]}" for name in SERVICES}
    env = dict(os.environ)
    env.update(
        {
            "LWDOCK_HOME": str(home),
            "LWDOCK_DATABASE_URL": database_url,
            "LWDOCK_BLOB_DIR": str(blob_dir),
            "LWDOCK_TOKENS_FILE": str(tokens_file),
            # services call each other with the local admin token unless told otherwise
            "LWDOCK_SERVICE_TOKEN": os.environ.get("LWDOCK_SERVICE_TOKEN")
            or admin_token_file.read_text().strip(),
            **{f"LWDOCK_{name.upper()}_ADDRESS": addr for name, addr in addresses.items()},
        }
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    exit_code = 0
    try:
        for name, (module, _) in SERVICES.items():
            if stopping:
                break
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", module, "--host", options.host,
                 "--port", str(options.ports[name])],
                env=env,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name, (_, services) in SERVICES.items():
            if stopping:
                break
            process = processes[name]
            ready = _wait_serving(
                addresses[name],
                services,
                deadline,
                lambda p=process: bool(stopping) or p.poll() is not None,  # type: ignore[misc]
            )
            if stopping:
                break
            if not ready:
                _say(f"error: {name} did not become SERVING on {addresses[name]}")
                return 1
        if not stopping:
            lines = ["", "learnware-dock is up:"]
            for name, (_, services) in SERVICES.items():
                lines.append(f"  {name:<9} {addresses[name]:<22} {', '.join(services)}")
            lines += [
                f"  postgres  {database_url}",
                f"  blobs     {blob_dir}",
                f"  token     {admin_token_file} (admin)",
                "Press Ctrl-C to stop.",
            ]
            _say("\n".join(lines))
        while not stopping:
            died = [n for n, p in processes.items() if p.poll() is not None]
            if died:
                _say(f"error: {', '.join(died)} exited unexpectedly; stopping the suite")
                exit_code = 1
                break
            time.sleep(0.2)
        return exit_code
    finally:
        _say("stopping ...")
        stop_processes(processes.values())
        if database is not None:
            database.stop()
        _say("stopped")
