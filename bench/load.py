"""Load: 50 concurrent clients for 60 s mixing search, get, list and predict against the suite.

    python bench/load.py             # 50 clients, 60 s
    python bench/load.py --quick     # 50 clients, 15 s; JSON last
    python bench/load.py --clients 20 --duration 30

Starts the whole suite the way a user does, `lwdock up` (lwdock/suite.py: an embedded
PostgreSQL and the four services as separate processes) with a temporary home on 127.0.0.1
ports of its own, and stops it at the end (SIGTERM). Then:

- Seeds the registry with N learnwares: the reference fixture `learnware_digits_svc.zip`
  (an SVC on 8x8 digits, input (64,), output (5,)), rezipped with another zip comment so each
  has its own sha256, uploaded with the local admin token; waits (bounded) until reuse_service
  has checked them ACTIVE.
- Probes each operation once. An RPC the suite answers UNIMPLEMENTED (a service not built yet)
  stays in the mix and is counted in the table as an *unavailable RPC*, never as a success and
  never hidden; its latency is left out of the percentiles.
- Runs C clients (asyncio tasks in this process, each with its own channel from
  `lwdock.channels.aio_channel` and a 10 s deadline per call) for D seconds, each picking with
  a seeded RNG: search 30 % (SearchLearnwares: semantic data_type Table + the fixture's
  statistical spec, page_size 5), get 30 % (GetLearnware of a random seeded learnware), list
  25 % (ListLearnwares, page_size 20), predict 15 % (Predict with one learnware on 10 rows of
  the fixture's digits). Calls are closed-loop: a client sends its next call when the last ends.
- Samples every second the resident memory (RSS) of each service process, and of the sandbox
  workers under reuse_service together, to show whether memory stays flat: start, end, peak,
  and the least-squares slope over the last two thirds of the run.

Unexpected errors = every status but OK and (for unavailable RPCs) UNIMPLEMENTED. The clients
share the machine's cores with the suite and PostgreSQL, so the figures are for this machine
as a whole. There is no reference column: the reference package has no server to load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _machine import cpu_model  # noqa: E402  (bench/, the script's own folder)

from lwdock.channels import aio_channel  # noqa: E402
from lwdock.common.v1 import learnware_pb2, specification_pb2  # noqa: E402
from lwdock.registry.v1 import registry_service_pb2 as registry_pb  # noqa: E402
from lwdock.registry.v1 import registry_service_pb2_grpc  # noqa: E402
from lwdock.reuse.v1 import resources_pb2 as reuse_resources  # noqa: E402
from lwdock.reuse.v1 import reuse_service_pb2 as reuse_pb  # noqa: E402
from lwdock.reuse.v1 import reuse_service_pb2_grpc  # noqa: E402
from lwdock.search.v1 import resources_pb2 as search_resources  # noqa: E402
from lwdock.search.v1 import search_service_pb2 as search_pb  # noqa: E402
from lwdock.search.v1 import search_service_pb2_grpc  # noqa: E402
from lwdock.suite import SERVICES, stop_processes  # noqa: E402
from lwdock.tensors import from_numpy  # noqa: E402
from lwdock.uploads import create_learnware_requests, rezip  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "reference"
ZIP_PATH = FIXTURES / "learnware_digits_svc.zip"
SEMANTIC_PATH = FIXTURES / "learnware_digits_svc.semantic.json"
DIGITS_PATH = FIXTURES / "digits_classes0to4_first100.npy"

FULL = {"clients": 50, "duration_s": 60.0, "learnwares": 8}
QUICK = {"clients": 50, "duration_s": 15.0, "learnwares": 4}
MIX = {"search": 0.30, "get": 0.30, "list": 0.25, "predict": 0.15}
CALL_TIMEOUT_S = 10.0
UP_TIMEOUT_S = 180.0
ACTIVE_TIMEOUT_S = 120.0
SAMPLE_INTERVAL_S = 1.0
UNAVAILABLE = grpc.StatusCode.UNIMPLEMENTED


def _log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the suite ------------------------------------------------------------------------------


@dataclass
class Suite:
    process: subprocess.Popen[bytes]
    home: Path
    addresses: dict[str, str]
    token: str

    def service_processes(self) -> dict[str, psutil.Process]:
        """The four service processes, by short name (children of `lwdock up`)."""
        modules = {module: name for name, (module, _) in SERVICES.items()}
        found: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                for module, name in modules.items():
                    if "-m" in cmdline and module in cmdline:
                        found[name] = child
        return found


def start_suite(home: Path) -> Suite:
    ports = {name: free_port() for name in SERVICES}
    argv = [sys.executable, "-c", "import sys; from lwdock.cli import main; sys.exit(main())"]
    argv += ["up", "--home", str(home), "--host", "127.0.0.1"]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")}
    env["LWDOCK_LOG_LEVEL"] = "WARNING"  # one access-log line per call would dominate
    log = (home.parent / "suite.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + UP_TIMEOUT_S
    while b"learnware-dock is up" not in (home.parent / "suite.log").read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (home.parent / "suite.log").read_bytes()[-3000:].decode(errors="replace")
            stop_suite(process)
            raise RuntimeError(f"lwdock up did not come up:\n{tail}")
        time.sleep(0.5)
    token = (home / "admin.token").read_text().strip()
    return Suite(process, home, {n: f"127.0.0.1:{p}" for n, p in ports.items()}, token)


def stop_suite(process: subprocess.Popen[bytes]) -> None:
    stop_processes([process], timeout_s=30)


# --- seeding --------------------------------------------------------------------------------


async def seed(suite: Suite, count: int) -> tuple[list[str], dict[str, int]]:
    """Upload `count` distinct learnwares; wait (bounded) for their checks. Returns the names
    and how many ended in each state."""
    fixture = ZIP_PATH.read_bytes()
    semantic = SEMANTIC_PATH.read_text()
    names: list[str] = []
    async with aio_channel(suite.addresses["registry"], token=suite.token) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        for i in range(count):
            package = rezip(fixture, f"lwdock-load-{i}".encode())
            requests = create_learnware_requests(
                package, semantic_json=semantic, request_id=f"load-seed-{i}"
            )
            learnware = await stub.CreateLearnware(iter(requests), timeout=60)
            names.append(learnware.name)
        deadline = time.monotonic() + ACTIVE_TIMEOUT_S
        states: dict[str, int] = {}
        while True:
            for name in names:
                got = await stub.GetLearnware(
                    registry_pb.GetLearnwareRequest(name=name), timeout=CALL_TIMEOUT_S
                )
                states[name] = got.state
            if not set(states.values()) & _WAITING or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    by_state = Counter(learnware_pb2.LearnwareState.Name(s) for s in states.values())
    return names, dict(by_state)


_WAITING = {learnware_pb2.LEARNWARE_STATE_PENDING, learnware_pb2.LEARNWARE_STATE_CHECKING}


# --- the operations -------------------------------------------------------------------------


@dataclass
class Workload:
    names: list[str]
    active: list[str]
    spec_json: str
    digits: np.ndarray

    def calls(self, channels: dict[str, grpc.aio.Channel]) -> dict[str, Callable[..., Any]]:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channels["registry"])
        search = search_service_pb2_grpc.SearchServiceStub(channels["search"])
        reuse = reuse_service_pb2_grpc.ReuseServiceStub(channels["reuse"])
        spec = specification_pb2.StatisticalSpecification(reference_json=self.spec_json)
        search_request = search_pb.SearchLearnwaresRequest(
            semantic_query=search_resources.SemanticQuery(data_types=["Table"]),
            statistical_specification=spec,
            page_size=5,
        )
        list_request = registry_pb.ListLearnwaresRequest(page_size=20)
        rows = from_numpy(self.digits[:10])
        targets = self.active or self.names

        def do_search(rng: random.Random) -> Awaitable[Any]:
            return search.SearchLearnwares(search_request, timeout=CALL_TIMEOUT_S)

        def do_get(rng: random.Random) -> Awaitable[Any]:
            request = registry_pb.GetLearnwareRequest(name=rng.choice(self.names))
            return registry.GetLearnware(request, timeout=CALL_TIMEOUT_S)

        def do_list(rng: random.Random) -> Awaitable[Any]:
            return registry.ListLearnwares(list_request, timeout=CALL_TIMEOUT_S)

        def do_predict(rng: random.Random) -> Awaitable[Any]:
            selection = reuse_resources.LearnwareSelection(learnwares=[rng.choice(targets)])
            request = reuse_pb.PredictRequest(learnwares=selection, input=rows)
            return reuse.Predict(request, timeout=CALL_TIMEOUT_S)

        return {"search": do_search, "get": do_get, "list": do_list, "predict": do_predict}


def stat_spec_json() -> str:
    with zipfile.ZipFile(ZIP_PATH) as package:
        return package.read("stat_spec.json").decode()


@dataclass
class OpStats:
    latencies_ok: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    @property
    def unavailable(self) -> int:
        return self.codes.get(UNAVAILABLE.name, 0)

    @property
    def unexpected(self) -> int:
        return self.calls - self.ok - self.unavailable

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ok, q) * 1000) if self.latencies_ok else 0.0


async def one_call(call: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        await call()
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    except Exception as exc:  # a client-side failure counts as unexpected too
        code = f"CLIENT_{type(exc).__name__}"
    return code, time.perf_counter() - start


async def run_load(
    suite: Suite, work: Workload, clients: int, duration_s: float, seed_value: int
) -> tuple[dict[str, OpStats], float]:
    stats = {op: OpStats() for op in MIX}
    ops, weights = list(MIX), list(MIX.values())
    stop_at = time.monotonic() + duration_s

    async def client(index: int) -> None:
        rng = random.Random(seed_value * 1000 + index)
        channels = {n: aio_channel(a, token=suite.token) for n, a in suite.addresses.items()}
        try:
            calls = work.calls(channels)
            while time.monotonic() < stop_at:
                op = rng.choices(ops, weights)[0]
                code, seconds = await one_call(lambda op=op: calls[op](rng))  # type: ignore[misc]
                stats[op].codes[code] += 1
                if code == "OK":
                    stats[op].latencies_ok.append(seconds)
        finally:
            for channel in channels.values():
                await channel.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return stats, time.perf_counter() - started


async def probe(suite: Suite, work: Workload) -> dict[str, str]:
    """Each operation once, before the load: its status code."""
    channels = {n: aio_channel(a, token=suite.token) for n, a in suite.addresses.items()}
    try:
        calls = work.calls(channels)
        rng = random.Random(0)
        return {op: (await one_call(lambda op=op: calls[op](rng)))[0] for op in MIX}  # type: ignore[misc]
    finally:
        for channel in channels.values():
            await channel.close()


# --- memory ---------------------------------------------------------------------------------


@dataclass
class MemoryTrace:
    times: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)

    def add(self, t: float, values: dict[str, float]) -> None:
        self.times.append(t)
        for name, value in values.items():
            self.rss.setdefault(name, []).append(value)

    def slope_mib_per_min(self, name: str) -> float:
        """Least-squares slope over the last two thirds of the samples."""
        values = self.rss[name]
        start = len(values) // 3
        t = np.array(self.times[start : len(values)])
        v = np.array(values[start:])
        if len(t) < 2 or float(np.ptp(t)) == 0.0:
            return 0.0
        return float(np.polyfit(t, v, 1)[0] * 60.0)


def sample_memory(processes: dict[str, psutil.Process]) -> dict[str, float]:
    mib = 1024.0 * 1024.0
    values: dict[str, float] = {}
    for name, process in processes.items():
        with contextlib.suppress(psutil.Error):
            values[name] = process.memory_info().rss / mib
            if name == "reuse":
                workers = 0.0
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        workers += child.memory_info().rss / mib
                values["reuse workers"] = workers
    return values


async def watch_memory(
    processes: dict[str, psutil.Process], trace: MemoryTrace, stop: asyncio.Event
) -> None:
    start = time.monotonic()
    while not stop.is_set():
        trace.add(time.monotonic() - start, await asyncio.to_thread(sample_memory, processes))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)


# --- output ---------------------------------------------------------------------------------


def ops_table(stats: dict[str, OpStats], wall_s: float, probes: dict[str, str]) -> str:
    lines = [
        "| op | share | calls | OK/s | p50 ms | p99 ms | unavailable RPC | unexpected | codes |",
        "|" + "---|" * 9,
    ]
    total = OpStats()
    for op, s in stats.items():
        total.latencies_ok += s.latencies_ok
        total.codes.update(s.codes)
        unavailable = f"{s.unavailable:,}" + (" (UNIMPLEMENTED)" if s.unavailable else "")
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(s.codes.items()))
        lines.append(
            f"| {op} | {MIX[op]:.0%} | {s.calls:,} | {s.ok / wall_s:.1f} | {s.pct_ms(50):.1f} "
            f"| {s.pct_ms(99):.1f} | {unavailable} | {s.unexpected:,} | {codes} "
            f"(probe: {probes[op]}) |"
        )
    lines.append(
        f"| all | 100% | {total.calls:,} | {total.ok / wall_s:.1f} | {total.pct_ms(50):.1f} "
        f"| {total.pct_ms(99):.1f} | {total.unavailable:,} | {total.unexpected:,} | |"
    )
    return "\n".join(lines)


def memory_table(trace: MemoryTrace) -> str:
    lines = [
        "| process | RSS start MiB | end MiB | peak MiB | end / start | slope MiB/min |",
        "|" + "---|" * 6,
    ]
    for name, values in trace.rss.items():
        start, end = values[0], values[-1]
        ratio = f"{end / start:.2f}" if start > 0 else "-"
        lines.append(
            f"| {name} | {start:.0f} | {end:.0f} | {max(values):.0f} | {ratio} "
            f"| {trace.slope_mib_per_min(name):+.1f} |"
        )
    return "\n".join(lines)


# --- entry point ----------------------------------------------------------------------------


async def bench(sizes: dict[str, Any], seed_value: int, command: str) -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwdock-bench-load-") as tmp:
        home = Path(tmp) / "home"
        _log("starting the suite (lwdock up)")
        suite = await asyncio.to_thread(start_suite, home)
        try:
            processes = suite.service_processes()
            missing = set(SERVICES) - set(processes)
            if missing:
                raise RuntimeError(f"service processes not found: {sorted(missing)}")
            _log(f"suite up: {suite.addresses}; seeding {sizes['learnwares']} learnwares")
            names, states = await seed(suite, int(sizes["learnwares"]))
            _log(f"learnware states after the checks: {states}")
            active = await _active(suite, names)
            work = Workload(names, active, stat_spec_json(), np.load(DIGITS_PATH))
            probes = await probe(suite, work)
            _log(f"probes: {probes}")
            trace = MemoryTrace()
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_memory(processes, trace, stop))
            _log(f"load: {sizes['clients']} clients for {sizes['duration_s']:.0f} s")
            stats, wall_s = await run_load(
                suite, work, int(sizes["clients"]), float(sizes["duration_s"]), seed_value
            )
            stop.set()
            await watcher
        finally:
            _log("stopping the suite")
            await asyncio.to_thread(stop_suite, suite.process)
    seconds = time.perf_counter() - started

    unavailable_rpcs = sorted(op for op, s in stats.items() if s.unavailable)
    unexpected = sum(s.unexpected for s in stats.values())
    total_ok = sum(s.ok for s in stats.values())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {command} | {now} | {os.cpu_count()} cores, {cpu_model()}")
    print(
        f"# suite: `lwdock up` (4 service processes + embedded PostgreSQL) on 127.0.0.1; "
        f"{sizes['clients']} closed-loop clients in this process for {wall_s:.1f} s; "
        f"{len(names)} learnwares ({', '.join(f'{k} {v}' for k, v in states.items())})"
    )
    print("# reference: none (the reference package has no server to put under load)")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# load average at the end: {load} (clients, services and PostgreSQL share the cores)")
    if unavailable_rpcs:
        print(
            f"# unavailable RPCs (UNIMPLEMENTED by this build, counted apart, no latency): "
            f"{', '.join(unavailable_rpcs)}"
        )
    print()
    print(ops_table(stats, wall_s, probes))
    print()
    print(f"Resident memory, sampled every {SAMPLE_INTERVAL_S:.0f} s during the load:")
    print()
    print(memory_table(trace))
    summary: dict[str, Any] = {
        "clients": sizes["clients"],
        "duration_s": round(wall_s, 1),
        "ok_per_s": round(total_ok / wall_s, 1),
        "unexpected_errors": unexpected,
        "unavailable_rpcs": unavailable_rpcs,
        **{f"{op}_p99_ms": round(s.pct_ms(99), 1) for op, s in stats.items() if s.ok},
        **{f"{op}_ok_per_s": round(s.ok / wall_s, 1) for op, s in stats.items()},
        "rss_end_over_start": {
            name: round(values[-1] / values[0], 3)
            for name, values in trace.rss.items()
            if values[0] > 0
        },
        "rss_slope_mib_per_min": {
            name: round(trace.slope_mib_per_min(name), 2) for name in trace.rss
        },
        "learnware_states": states,
        "total_seconds": round(seconds, 1),
    }
    print()
    print(json.dumps(summary))
    return 0 if unexpected == 0 else 1


async def _active(suite: Suite, names: list[str]) -> list[str]:
    async with aio_channel(suite.addresses["registry"], token=suite.token) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        active = []
        for name in names:
            got = await stub.GetLearnware(registry_pb.GetLearnwareRequest(name=name), timeout=10)
            if got.state == learnware_pb2.LEARNWARE_STATE_ACTIVE:
                active.append(name)
        return active


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s instead of 60 s")
    parser.add_argument("--clients", type=int, help="concurrent clients (50)")
    parser.add_argument("--duration", type=float, help="seconds of load")
    parser.add_argument("--learnwares", type=int, help="learnwares seeded")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed of the clients")
    args = parser.parse_args(argv)
    sizes: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key, value in (
        ("clients", args.clients),
        ("duration_s", args.duration),
        ("learnwares", args.learnwares),
    ):
        if value is not None:
            sizes[key] = value
    command = "python bench/load.py" + (" --quick" if args.quick else "")
    extra = [f"--{k} {v}" for k, v in (("clients", args.clients), ("duration", args.duration))]
    if args.clients is not None or args.duration is not None:
        command += " " + " ".join(e for e in extra if not e.endswith("None"))
    return asyncio.run(bench(sizes, args.seed, command))


if __name__ == "__main__":
    sys.exit(main())
