"""`lwdock up` and each service as real processes: ready, healthy, and gone after a signal.

These tests start the console script and `python -m <service>` as child processes (not the
in-process `suite` fixture), talk to them over gRPC on free loopback ports, stop them with
SIGTERM / SIGINT (and SIGINT to the process group, which is what Ctrl-C in a terminal sends),
and check that no process is left behind: neither a service nor the embedded PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from lwdock.tokens import hash_token
from tests.conftest import venv_bin

SERVICES: dict[str, tuple[str, list[str]]] = {
    "spec": ("spec_service", ["lwdock.spec.v1.SpecService"]),
    "registry": ("registry_service", ["lwdock.registry.v1.RegistryService"]),
    "search": ("search_service", ["lwdock.search.v1.SearchService"]),
    "reuse": ("reuse_service", ["lwdock.reuse.v1.ReuseService", "inference.GRPCInferenceService"]),
}
READY_LINE = "Press Ctrl-C to stop."
READY_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 10.0
FAIL_TIMEOUT_S = 60.0
# A parent's own children must be gone (reaped) the moment it exited. PostgreSQL, stopped with
# `pg_ctl stop -w`, removes its pid file just before it exits: allow that last moment.
GONE_GRACE_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------------------------
# helpers


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (bound to 127.0.0.1:0, then closed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def child_env(home: Path) -> dict[str, str]:
    """The test's environment without any LWDOCK_* setting, plus LWDOCK_HOME=`home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LWDOCK_")}
    env["LWDOCK_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A child process: stdout read line by line on a thread, stderr kept in a file."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, stderr: Path) -> None:
        self.argv = argv
        self.stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            # Its own process group: a signal to the group reaches it and the services it
            # starts (like Ctrl-C in a terminal), and never pytest.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> str:
        self._stderr.flush()
        stderr = self.stderr_path.read_text(errors="replace")
        return (
            f"command: {' '.join(self.argv)}\nexit code: {self.process.poll()}\n"
            f"--- stdout ---\n" + "\n".join(self.lines) + f"\n--- stderr (tail) ---\n"
            f"{stderr[-6000:]}"
        )

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Block until a stdout line contains `text`; fail on timeout or end of output."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line containing {text!r} within {timeout} s\n{self.describe()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=5)
                pytest.fail(f"output ended before a line containing {text!r}\n{self.describe()}")
            self.lines.append(line)
            if text in line:
                return

    def drain(self, timeout: float = 5.0) -> None:
        """Collect the rest of stdout (after the process exited)."""
        self._reader.join(timeout=timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit within {timeout} s\n{self.describe()}")
        self.drain()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a zombie holds no resources; only its parent can reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text` (e.g. postgres' `-D <home>/postgres`)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(text in part for part in cmdline) and is_alive(process):
            found.append(process)
    return found


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster named in `pgdata`/postmaster.pid and everything it started."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return []
    return [postmaster, *descendants(pid)]


def show(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"  pid {process.pid}: {' '.join(process.cmdline())}")
        except psutil.Error:
            lines.append(f"  pid {process.pid}")
    return "\n".join(lines)


@dataclass
class Tracked:
    """Processes a test started, directly or not, seen while it ran."""

    # The children of the process under test: it must stop and reap them before it exits.
    children: list[psutil.Process] = field(default_factory=list)
    # Grandchildren, the postmaster and its processes.
    others: list[psutil.Process] = field(default_factory=list)

    @property
    def all(self) -> list[psutil.Process]:
        return [*self.children, *self.others]

    def add(self, processes: list[psutil.Process], *, children: bool = False) -> None:
        target = self.children if children else self.others
        target.extend(p for p in processes if p not in self.all)

    def watch(self, pid: int, pgdata: Path | None = None) -> None:
        """Record `pid`'s children and descendants (and the postmaster of `pgdata`)."""
        try:
            parent = psutil.Process(pid)
            self.add(parent.children(), children=True)
            self.add(parent.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        if pgdata is not None:
            self.add(postgres_processes(pgdata))


def assert_nothing_left(tracked: Tracked, home: Path) -> None:
    """Call after the process under test exited (and was waited for): its children are gone,
    so are the other processes seen, and no live process mentions `home` on its command line."""
    left = [p for p in tracked.children if is_alive(p)]
    assert not left, f"still running after their parent exited:\n{show(left)}"
    deadline = time.monotonic() + GONE_GRACE_S
    while True:
        left = [p for p in tracked.others if is_alive(p)]
        left += [p for p in processes_mentioning(str(home)) if p not in left]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind:\n{show(left)}"


def kill_leftovers(tracked: Tracked, home: Path) -> None:
    """Last resort after a failure: stop what the test started, postgres included."""
    for process in tracked.all:
        with contextlib.suppress(psutil.Error):
            if is_alive(process):
                process.kill()
    # The embedded postmaster runs in its own session; SIGQUIT = immediate shutdown (it takes
    # its own children down), then SIGKILL whatever still stands.
    stragglers = processes_mentioning(str(home))
    for process in stragglers:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGQUIT)
    _, alive = psutil.wait_procs(stragglers, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def check_health(address: str, services: list[str]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", *services]:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == SERVING, (address, service, response)


def wait_serving(child: Child, address: str, services: list[str], timeout: float) -> None:
    """Poll grpc.health.v1 until `address` reports SERVING for "" and every service name."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", *services]:
            while True:
                if child.process.poll() is not None:
                    pytest.fail(f"exited before SERVING ({service!r})\n{child.describe()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{service!r} not SERVING within {timeout} s\n{child.describe()}")
                try:
                    request = health_pb2.HealthCheckRequest(service=service)
                    if stub.Check(request, timeout=2).status == SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)


def lwdock_up(home: Path, ports: dict[str, int], tmp_path: Path) -> Child:
    argv = [venv_bin("lwdock"), "up", "--home", str(home)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    return Child(argv, env=child_env(home), cwd=tmp_path, stderr=tmp_path / "lwdock-up.stderr")


@contextlib.contextmanager
def cleanup(child: Child, tracked: Tracked, home: Path) -> Iterator[None]:
    try:
        yield
    finally:
        tracked.watch(child.pid)
        child.close()
        kill_leftovers(tracked, home)


# ---------------------------------------------------------------------------------------------
# lwdock up


def send(child: Child, how: str) -> None:
    if how == "SIGTERM":
        child.process.send_signal(signal.SIGTERM)
    elif how == "SIGINT":
        child.process.send_signal(signal.SIGINT)
    else:  # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(child.pid, signal.SIGINT)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "ctrl-c"])
def test_up_serves_everything_from_an_empty_home_and_stops_cleanly(
    tmp_path: Path, how: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert not any(home.iterdir())
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    tracked = Tracked()
    up = lwdock_up(home, ports, tmp_path)
    with cleanup(up, tracked, home):
        up.wait_for_line(READY_LINE, READY_TIMEOUT_S)
        table = "\n".join(up.lines)
        for address in addresses.values():
            assert address in table, table

        # 1. Every address answers health for the server and each of its services.
        for name, (_, services) in SERVICES.items():
            check_health(addresses[name], services)

        # One real RPC, with the local admin token (a bad token is refused, so the admin
        # token's hash really is in tokens.json).
        admin_token_file = home / "admin.token"
        tokens_file = home / "tokens.json"
        assert admin_token_file.is_file()
        assert stat.S_IMODE(admin_token_file.stat().st_mode) == 0o600
        token = admin_token_file.read_text().strip()
        assert token
        with grpc.insecure_channel(addresses["registry"]) as channel:
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            request = registry_service_pb2.GetSemanticVocabularyRequest()
            response = stub.GetSemanticVocabulary(
                request, metadata=[("authorization", f"Bearer {token}")], timeout=10
            )
            assert len(response.keys) > 0
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetSemanticVocabulary(
                    request, metadata=[("authorization", "Bearer lwd_not-a-token")], timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The token is stored hashed only, in a private file.
        assert tokens_file.is_file()
        assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
        stored = tokens_file.read_text()
        assert token not in stored
        assert json.loads(stored)[hash_token(token)]["role"] == "admin"

        # Everything that must stop, collected before the signal.
        tracked.watch(up.pid, home / "postgres")
        commands = {" ".join(p.cmdline()) for p in tracked.children}
        for module, _ in SERVICES.values():
            assert any(f"-m {module} " in command for command in commands), commands
        assert any(f"-D {home / 'postgres'}" in " ".join(p.cmdline()) for p in tracked.others), (
            f"no postmaster for {home / 'postgres'}"
        )

        # 2./3. SIGTERM, SIGINT or Ctrl-C: exit 0 within 10 s, nothing left behind.
        started = time.monotonic()
        send(up, how)
        code = up.wait_exit(EXIT_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert code == 0, up.describe()
        assert elapsed < EXIT_TIMEOUT_S, elapsed
        assert up.lines[-1] == "stopped", up.describe()
        assert_nothing_left(tracked, home)


def test_up_stopped_while_starting_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM while PostgreSQL is still starting: exit 0, nothing left behind."""
    home = tmp_path / "home"
    home.mkdir()
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    tracked = Tracked()
    up = lwdock_up(home, ports, tmp_path)
    with cleanup(up, tracked, home):
        up.wait_for_line("starting embedded PostgreSQL", READY_TIMEOUT_S)
        up.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while up.process.poll() is None and time.monotonic() < deadline:
            tracked.watch(up.pid, home / "postgres")
            time.sleep(0.05)
        code = up.wait_exit(EXIT_TIMEOUT_S)
        assert code == 0, up.describe()
        assert READY_LINE not in up.lines, up.describe()
        assert_nothing_left(tracked, home)


@pytest.mark.parametrize("occupied", ["spec", "reuse"])
def test_up_with_a_port_in_use_fails_and_leaves_nothing_behind(
    tmp_path: Path, occupied: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    tracked = Tracked()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        ports[occupied] = blocker.getsockname()[1]
        up = lwdock_up(home, ports, tmp_path)
        with cleanup(up, tracked, home):
            # It must give up on its own; watch what it starts meanwhile.
            deadline = time.monotonic() + FAIL_TIMEOUT_S
            while up.process.poll() is None and time.monotonic() < deadline:
                tracked.watch(up.pid, home / "postgres")
                time.sleep(0.05)
            if up.process.poll() is None:
                pytest.fail(f"still running {FAIL_TIMEOUT_S} s after start\n{up.describe()}")
            code = up.wait_exit(1)
            assert code != 0, up.describe()
            assert READY_LINE not in up.lines, up.describe()
            assert any(occupied in line for line in up.lines if "error" in line), up.describe()
            assert_nothing_left(tracked, home)


# ---------------------------------------------------------------------------------------------
# each service alone


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_alone_and_stops_on_sigterm(
    tmp_path: Path, name: str, request: pytest.FixtureRequest
) -> None:
    module, services = SERVICES[name]
    home = tmp_path / "home"
    home.mkdir()
    port, registry_port = free_ports(2)
    argv = [sys.executable, "-m", module, "--port", str(port)]
    env = child_env(home)
    with contextlib.ExitStack() as stack:
        if name in ("registry", "search"):
            # LWDOCK_TEST_DATABASE_URL when set, else the session's embedded PostgreSQL.
            database_url = request.getfixturevalue("database_url")
        if name == "registry":
            argv += ["--database-url", database_url]
        if name == "search":
            # search serves once it has caught up with a registry's change feed: give it one
            registry = Child(
                [sys.executable, "-m", "registry_service", "--port", str(registry_port),
                 "--database-url", database_url],
                env=child_env(home), cwd=tmp_path, stderr=tmp_path / "registry.stderr",
            )  # fmt: skip
            stack.enter_context(cleanup(registry, Tracked(), home))
            wait_serving(registry, f"127.0.0.1:{registry_port}", SERVICES["registry"][1],
                         READY_TIMEOUT_S)  # fmt: skip
            env["LWDOCK_REGISTRY_ADDRESS"] = f"127.0.0.1:{registry_port}"
        _run_alone(argv, env, tmp_path, name, port, services, home)


def _run_alone(
    argv: list[str],
    env: dict[str, str],
    tmp_path: Path,
    name: str,
    port: int,
    services: list[str],
    home: Path,
) -> None:
    tracked = Tracked()
    child = Child(argv, env=env, cwd=tmp_path, stderr=tmp_path / f"{name}.stderr")
    with cleanup(child, tracked, home):
        wait_serving(child, f"127.0.0.1:{port}", services, READY_TIMEOUT_S)
        check_health(f"127.0.0.1:{port}", services)
        tracked.add([psutil.Process(child.pid)], children=True)
        tracked.watch(child.pid)
        child.process.send_signal(signal.SIGTERM)
        code = child.wait_exit(EXIT_TIMEOUT_S)
        assert code == 0, child.describe()
        assert_nothing_left(tracked, home)
