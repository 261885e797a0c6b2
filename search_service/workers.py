"""Several search processes on one port: the supervisor of LWDOCK_SEARCH_WORKERS > 1.

A search holds the GIL for most of its time, so one process runs about one search at a time
whatever its threads. With `search_workers` = N the supervisor starts N worker processes
(`python -m search_service`, worker i told by LWDOCK_SEARCH_WORKER_INDEX) that bind the same
port with SO_REUSEPORT; the kernel spreads incoming connections over them. That is per
connection: one client channel talks to one worker, so N workers serve N or more clients
(or a client with several channels), not one channel faster.

- The supervisor holds the port itself (bound with SO_REUSEPORT, never listening, so it is
  handed no connection): port 0 becomes one free port for all the workers, and the port
  stays the group's while a worker restarts.
- Each worker loads the snapshot and follows the registry's change feed on its own (N
  indexes, N times the memory); worker 0 alone writes the snapshot. Each reports its own
  health; GetIndexStats says which worker answered. Metrics: worker i on metrics_port + i
  (each on a free port when it is 0).
- A worker that exits is started again after RESTART_DELAY_S. One that exits within
  CRASH_WINDOW_S of its start CRASH_LIMIT times in a row (it cannot start: a bad setting, a
  port in use) stops the group, exit status 1, for the orchestrator to see.
- SIGTERM/SIGINT are passed to every worker, each of which shuts down gracefully; workers
  still running after the drain and grace periods (+ STOP_MARGIN_S) are killed. A supervisor
  that dies without that (SIGKILL) takes its workers with it: each is started with the
  parent-death signal SIGTERM (Linux prctl), so that none is left serving the port alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lwdock.settings import DEFAULT_PORTS, Settings

log = logging.getLogger("lwdock.search")

RESTART_DELAY_S = 1.0
CRASH_WINDOW_S = 10.0
CRASH_LIMIT = 3
STOP_MARGIN_S = 5.0
POLL_S = 0.2


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it keeps the
    port (a free one for port 0) for the processes that bind it the same way."""
    address = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """In the worker before it runs: SIGTERM when the supervisor dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float
    quick_exits: int = 0


class Supervisor:
    """Starts `settings.search_workers` workers with `argv` (the command line's flags) and
    keeps them running until stopped."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.count = settings.search_workers
        self.port = 0
        self.workers: dict[int, _Worker] = {}
        self._stopping = False

    def _command(self, index: int) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            "LWDOCK_SEARCH_WORKERS": str(self.count),
            "LWDOCK_SEARCH_WORKER_INDEX": str(index),
            "LWDOCK_SHARE_PORT": "1",
        }
        # Flags win over the environment: the workers' port and metrics port are appended
        # (argparse keeps the last), whatever the supervisor's command line said.
        flags = [*self.argv, "--port", str(self.port)]
        metrics = self.settings.metrics_port
        if metrics is not None:
            flags += ["--metrics-port", str(metrics + index if metrics else 0)]
        return [sys.executable, "-m", "search_service", *flags], env

    def _start(self, index: int, quick_exits: int = 0) -> None:
        command, env = self._command(index)
        process = subprocess.Popen(command, env=env, preexec_fn=_terminate_with_parent)
        self.workers[index] = _Worker(index, process, time.monotonic(), quick_exits)
        log.info("search worker started", extra={"worker": index, "pid": process.pid})

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or a worker that cannot start (1)."""
        settings = self.settings
        port = settings.port if settings.port is not None else DEFAULT_PORTS["search"]
        try:
            holder = reserve_port(settings.host, port)
        except OSError as exc:
            log.error(
                "search workers: cannot bind the port",
                extra={"address": f"{settings.host}:{port}", "error": str(exc)},
            )
            return 1
        self.port = int(holder.getsockname()[1])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        log.info(
            "search workers starting",
            extra={"address": f"{settings.host}:{self.port}", "workers": self.count},
        )
        status = 0
        try:
            for index in range(self.count):
                self._start(index)
            while not self._stopping:
                time.sleep(POLL_S)
                if not self._restart_exited():
                    status = 1
                    break
        finally:
            self._stop_all()
            holder.close()
        return status

    def _restart_exited(self) -> bool:
        """Start again the workers that exited; False when one keeps exiting at start."""
        for worker in list(self.workers.values()):
            code = worker.process.poll()
            if code is None or self._stopping:
                continue
            lived = time.monotonic() - worker.started
            quick = worker.quick_exits + 1 if lived < CRASH_WINDOW_S else 0
            log.warning(
                "search worker exited",
                extra={"worker": worker.index, "exit_code": code, "lived_s": round(lived, 1)},
            )
            if quick >= CRASH_LIMIT:
                log.error(
                    "search worker keeps exiting at start; stopping",
                    extra={"worker": worker.index, "exits": quick},
                )
                return False
            time.sleep(RESTART_DELAY_S)
            self._start(worker.index, quick)
        return True

    def _stop_all(self) -> None:
        live = [w for w in self.workers.values() if w.process.poll() is None]
        for worker in live:
            worker.process.send_signal(signal.SIGTERM)
        deadline = (
            time.monotonic() + self.settings.drain_delay_s + self.settings.grace_s + STOP_MARGIN_S
        )
        for worker in live:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("search worker killed at stop", extra={"worker": worker.index})
                worker.process.kill()
                worker.process.wait()
        log.info("search workers stopped")
