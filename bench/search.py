"""Indexed statistical search vs an exact scan and vs the reference's EasyStatSearcher.

For each market size M, synthetic table learnwares (d = 10, K = 100 reduced-set points, each
around its own random centre with its own spread, Dirichlet weights; z held as float32 values
so the index stores them exactly) go into a `SearchIndex` built in-process. Queries are RKMEs
of K = 100 points drawn from one learnware's distribution (half) or from an even mixture of
two (half). Reported per M:

- build time (embedding, self inner products, FAISS) and memory (the index's own count, and
  the resident-memory growth of the process) per learnware;
- in-process latency p50/p99 of a default search (10 singles, mixture of up to 5) and of a
  singles-only search (max_mixture = 1), the two alternating over LATENCY_ROUNDS rounds of
  the queries; and the p50 of a default search's thread CPU time (equal to its wall time
  unless the search waits or is descheduled);
- top-1 agreement and recall@10 against the exact ranking: a brute-force float64 squared MMD
  to every learnware (`lwdock.rkme.gaussian_kernel`), on a subset of the queries at large M;
- searches/s over gRPC (M <= 10^4): `python -m search_service` on loopback serving the index
  (written as a snapshot, which it loads), as one process and as 2 worker processes sharing
  the port (LWDOCK_SEARCH_WORKERS), and a client process with 8 channels (connections), one
  call in flight on each;
- the reference (`learnware==0.4.0.post1`, EasyStatSearcher, greedy mixture, max_search_num 5)
  on the same learnwares and queries for M in {10^2, 10^3}: median time per search, the speed
  ratio, and whether its top single equals ours.

Every computation runs on one thread (BLAS, OpenMP, FAISS, torch) on both sides; a search
service process runs its searches on a few threads, which share one core through the GIL, so
its workers are how it uses more cores. `--quick` (M up to 10^4)
finishes in a few minutes; its last line is one JSON object of key figures.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _reference_env as ref_env  # noqa: E402  (bench/ is on sys.path when run as a script)
import numpy as np  # noqa: E402

D, K, GAMMA = 10, 100, 0.1
SEED = 0
FULL_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (100, 1_000, 10_000)
REFERENCE_SIZES = (100, 1_000)
GRPC_MAX_SIZE = 10_000
LATENCY_QUERIES = 200
EXACT_QUERIES = {100: 100, 1_000: 100, 10_000: 100, 100_000: 30, 1_000_000: 8}
QUICK_LATENCY_QUERIES = 100
LATENCY_ROUNDS = 3
QUICK_EXACT_QUERIES = {100: 100, 1_000: 100, 10_000: 50}
QUICK_GRPC_SECONDS = 3.0
REFERENCE_QUERIES = {100: 10, 1_000: 5}
GRPC_SECONDS = 5.0
GRPC_CONCURRENCY = 8  # client channels, one call in flight on each
GRPC_WORKERS = 2  # search_service processes sharing the port (LWDOCK_SEARCH_WORKERS)
BUILD_CHUNK = 20_000


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --- data ------------------------------------------------------------------------------------


@dataclass
class Market:
    z: np.ndarray  # float32 [M, K, D]
    beta: np.ndarray  # float64 [M, K]
    centres: np.ndarray
    scales: np.ndarray


def make_market(m: int, seed: int = SEED) -> Market:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (m, D))
    scales = rng.uniform(0.5, 1.5, m)
    z = np.empty((m, K, D), dtype=np.float32)
    for start in range(0, m, 50_000):
        stop = min(m, start + 50_000)
        noise = rng.standard_normal((stop - start, K, D), dtype=np.float32)
        z[start:stop] = centres[start:stop, None, :] + scales[start:stop, None, None] * noise
    beta = rng.dirichlet(np.full(K, 5.0), m)
    return Market(z, beta, centres, scales)


def make_queries(
    market: Market, m: int, count: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(z float64 [K, D], beta [K]) for `count` users of the first m learnwares."""
    rng = np.random.default_rng(seed)
    queries = []
    for q in range(count):
        i, j = rng.integers(m, size=2)
        if q % 2 == 0:
            z = market.centres[i] + market.scales[i] * rng.standard_normal((K, D))
        else:
            half = K // 2
            z = np.concatenate(
                [
                    market.centres[i] + market.scales[i] * rng.standard_normal((half, D)),
                    market.centres[j] + market.scales[j] * rng.standard_normal((K - half, D)),
                ]
            )
        queries.append((z, np.full(K, 1.0 / K)))
    return queries


# --- ours ------------------------------------------------------------------------------------


def build_index(market: Market, m: int) -> tuple[Any, float, int]:
    from lwdock.rkme.spec import RKMESpec
    from search_service.index import LearnwareEntry, SearchIndex
    from search_service.semantic import SemanticRecord

    index = SearchIndex()
    record = SemanticRecord(data_type="Table", task="Classification", name="bench")
    before = _rss_bytes()
    started = time.perf_counter()
    for start in range(0, m, BUILD_CHUNK):
        stop = min(m, start + BUILD_CHUNK)
        index.upsert_many(
            [
                LearnwareEntry(
                    f"lw-{i:08d}",
                    record,
                    (RKMESpec(z=market.z[i], beta=market.beta[i], gamma=GAMMA),),
                )
                for i in range(start, stop)
            ]
        )
    return index, time.perf_counter() - started, _rss_bytes() - before


def self_products(market: Market, m: int) -> np.ndarray:
    """<l, l> of the first m learnwares, float64, by the Gaussian kernel directly."""
    out = np.empty(m)
    chunk = 500
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        zs = market.z[start:stop].astype(np.float64)
        bs = market.beta[start:stop]
        norms = np.einsum("bkd,bkd->bk", zs, zs)
        sq = norms[:, :, None] - 2.0 * np.einsum("bkd,bjd->bkj", zs, zs) + norms[:, None, :]
        out[start:stop] = np.einsum("bk,bkj,bj->b", bs, np.exp(-GAMMA * sq), bs)
    return out


def exact_ranking(
    market: Market, m: int, selfs: np.ndarray, z: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Indices of the first m learnwares by exact squared MMD to (z, beta), best first:
    <l, l> - 2 <l, u> + <u, u> in float64, every kernel value computed."""
    from lwdock.rkme.kernel import gaussian_kernel

    user_self = float(beta @ gaussian_kernel(z, z, GAMMA) @ beta)
    distances = np.empty(m)
    chunk = 2_000
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        zs = market.z[start:stop].astype(np.float64).reshape(-1, D)
        cross = (beta @ gaussian_kernel(z, zs, GAMMA)).reshape(stop - start, K)
        cross = (cross * market.beta[start:stop]).sum(axis=1)
        distances[start:stop] = selfs[start:stop] - 2.0 * cross + user_self
    return np.argsort(distances, kind="stable")


@dataclass
class Row:
    m: int
    build_s: float
    index_bytes_per_learnware: float
    rss_bytes_per_learnware: float
    index_type: str
    p50_ms: float
    p99_ms: float
    p50_singles_ms: float
    p99_singles_ms: float
    p50_cpu_ms: float  # thread CPU time of a default search
    top1: float
    recall10: float
    exact_queries: int
    grpc_qps: float | None = None
    grpc_p50_ms: float | None = None
    reference_ms: float | None = None
    reference_top1_match: float | None = None
    reference_mixture_match: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return self.reference_ms / self.p50_ms if self.reference_ms else None


def run_size(market: Market, m: int, work: Path, quick: bool) -> Row:
    from lwdock.rkme.spec import RKMESpec
    from search_service.index import SearchRequest

    _log(f"M={m}: building the index ...")
    index, build_s, rss = build_index(market, m)
    (partition,) = index.partitions.values()
    latency_queries = QUICK_LATENCY_QUERIES if quick else LATENCY_QUERIES
    queries = make_queries(market, m, latency_queries, seed=m)
    specs = [RKMESpec(z=z, beta=b, gamma=GAMMA) for z, b in queries]
    index.search(SearchRequest(spec=specs[0]))  # warm-up (feature cache, FAISS)

    def timed(max_mixture: int) -> tuple[list[float], list[float], list[Any]]:
        times, cpu, results = [], [], []
        for spec in specs:
            started, started_cpu = time.perf_counter(), time.thread_time()
            result = index.search(SearchRequest(spec=spec, page_size=10, max_mixture=max_mixture))
            cpu.append(time.thread_time() - started_cpu)
            times.append(time.perf_counter() - started)
            results.append(result)
        return times, cpu, results

    # Default and singles-only searches alternate over LATENCY_ROUNDS rounds, so that a slow
    # spell of this shared machine weighs on both and on a share of the samples only.
    _log(f"M={m}: {LATENCY_ROUNDS} x {latency_queries} searches of each kind ...")
    full_times: list[float] = []
    full_cpu: list[float] = []
    single_times: list[float] = []
    full_results: list[Any] = []
    for round_ in range(LATENCY_ROUNDS):
        times, cpu, results = timed(5)
        full_times += times
        full_cpu += cpu
        if round_ == 0:
            full_results = results
        single_times += timed(1)[0]

    exact_count = min((QUICK_EXACT_QUERIES if quick else EXACT_QUERIES)[m], latency_queries)
    _log(f"M={m}: exact rankings of {exact_count} queries ...")
    top1 = recall = 0.0
    selfs = self_products(market, m)
    for q in range(exact_count):
        truth = exact_ranking(market, m, selfs, *queries[q])[:10]
        ours = [int(hit.learnware_id[3:]) for hit in full_results[q].singles[:10]]
        top1 += float(ours[0] == truth[0])
        recall += len(set(ours) & set(truth.tolist())) / 10
    row = Row(
        m=m,
        build_s=build_s,
        index_bytes_per_learnware=partition.memory_bytes / m,
        rss_bytes_per_learnware=rss / m,
        index_type=partition.index_type,
        p50_ms=1e3 * float(np.median(full_times)),
        p99_ms=1e3 * float(np.percentile(full_times, 99)),
        p50_singles_ms=1e3 * float(np.median(single_times)),
        p99_singles_ms=1e3 * float(np.percentile(single_times, 99)),
        p50_cpu_ms=1e3 * float(np.median(full_cpu)),
        top1=top1 / exact_count,
        recall10=recall / exact_count,
        exact_queries=exact_count,
    )
    if m <= GRPC_MAX_SIZE:
        seconds = QUICK_GRPC_SECONDS if quick else GRPC_SECONDS
        _log(f"M={m}: gRPC, 1 and {GRPC_WORKERS} workers, 3 x {seconds:.0f} s ...")
        grpc = grpc_throughput(index, specs, work, m, seconds)
        row.grpc_qps, row.grpc_p50_ms = grpc["qps_n"], grpc["p50_ms_n"]
        row.extra["grpc_qps_1"] = grpc["qps_1"]
        row.extra["grpc_qps_singles"] = grpc["singles_qps_n"]
    if m in REFERENCE_SIZES:
        _log(f"M={m}: the reference ...")
        reference_vs_ours(market, m, queries, full_results, work, row)
    return row


# --- gRPC ------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request_file(specs: list[Any], path: Path, max_mixture: int) -> Path:
    from lwdock.converters import rkme_to_proto
    from lwdock.search.v1 import search_service_pb2

    with path.open("wb") as out:
        for spec in specs:
            message = search_service_pb2.SearchLearnwaresRequest(
                page_size=10, max_mixture=max_mixture
            )
            message.statistical_specification.rkme.CopyFrom(rkme_to_proto(spec))
            data = message.SerializeToString()
            out.write(len(data).to_bytes(4, "little") + data)
    return path


def _wait_for_workers(address: str, workers: int, count: int, within_s: float = 180.0) -> None:
    """Until each of the service's workers answers with `count` learnwares (separate
    connections reach separate workers)."""
    import grpc

    from lwdock.search.v1 import search_service_pb2, search_service_pb2_grpc

    ready: set[int] = set()
    deadline = time.monotonic() + within_s
    while len(ready) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"search workers not ready within {within_s} s: {sorted(ready)}")
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(address, options=options) as channel:
            stub = search_service_pb2_grpc.SearchServiceStub(channel)
            try:
                reply = stub.GetIndexStats(search_service_pb2.GetIndexStatsRequest(), timeout=5)
            except grpc.RpcError:
                time.sleep(0.5)
                continue
        if reply.learnware_count == count:
            ready.add(reply.worker)
        else:
            time.sleep(0.2)


def grpc_throughput(
    index: Any, specs: list[Any], work: Path, m: int, seconds: float
) -> dict[str, float]:
    """Searches/s over gRPC against `python -m search_service` on loopback, with 1 and with
    GRPC_WORKERS worker processes (LWDOCK_SEARCH_WORKERS) sharing the port: the index is
    written as a snapshot that the workers load (no registry: they serve that index), and a
    client process opens GRPC_CONCURRENCY channels (connections, which the kernel spreads over
    the workers), one call in flight on each. Default searches on both, singles-only on the
    workers. Keys: qps_1, p50_ms_1, qps_n, p50_ms_n, singles_qps_n."""
    from search_service.snapshot import save_snapshot

    snapshot = work / f"snapshot-{m}"
    save_snapshot(index, snapshot)
    default = _request_file(specs, work / "grpc-default.bin", 5)
    singles = _request_file(specs, work / "grpc-singles.bin", 1)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")}
    out: dict[str, float] = {}
    for workers, suffix, files in ((1, "1", (default,)), (GRPC_WORKERS, "n", (default, singles))):
        port = _free_port()
        env = {
            **base_env,
            "LWDOCK_HOME": str(work / f"service-{m}-{workers}"),
            "LWDOCK_PORT": str(port),
            "LWDOCK_SEARCH_SNAPSHOT_DIR": str(snapshot),
            "LWDOCK_SEARCH_WORKERS": str(workers),
            "LWDOCK_REGISTRY_ADDRESS": f"127.0.0.1:{_free_port()}",  # nothing there
            "LWDOCK_LOG_LEVEL": "ERROR",
            "LWDOCK_DRAIN_DELAY_S": "0",
            "LWDOCK_GRACE_S": "1",
        }
        root = Path(__file__).resolve().parent.parent
        server = subprocess.Popen([sys.executable, "-m", "search_service"], env=env, cwd=root)
        try:
            address = f"127.0.0.1:{port}"
            _wait_for_workers(address, workers, index.learnware_count)
            for path in files:
                client = subprocess.run(
                    [sys.executable, __file__, "--grpc-client", address, str(path), str(seconds)],
                    check=True,
                    stdout=subprocess.PIPE,
                )
                result = json.loads(client.stdout)
                if path == default:
                    out[f"qps_{suffix}"] = float(result["qps"])
                    out[f"p50_ms_{suffix}"] = float(result["p50_ms"])
                else:
                    out[f"singles_qps_{suffix}"] = float(result["qps"])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    return out


async def grpc_client(address: str, data: bytes, seconds: float) -> dict[str, float]:
    """GRPC_CONCURRENCY channels, each its own connection, one call in flight on each."""
    import grpc

    from lwdock.search.v1 import search_service_pb2, search_service_pb2_grpc

    messages = []
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 4], "little")
        messages.append(
            search_service_pb2.SearchLearnwaresRequest.FromString(
                data[offset + 4 : offset + 4 + size]
            )
        )
        offset += 4 + size
    latencies: list[float] = []
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
    ]
    channels = [
        grpc.aio.insecure_channel(address, options=options) for _ in range(GRPC_CONCURRENCY)
    ]
    try:
        stubs = [search_service_pb2_grpc.SearchServiceStub(c) for c in channels]
        for stub in stubs:  # connect and warm up
            await stub.SearchLearnwares(messages[0], timeout=30)
        deadline = time.perf_counter() + seconds

        async def loop(worker: int) -> None:
            i = worker
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await stubs[worker].SearchLearnwares(messages[i % len(messages)], timeout=30)
                latencies.append(time.perf_counter() - started)
                i += GRPC_CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(GRPC_CONCURRENCY)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    return {"qps": len(latencies) / elapsed, "p50_ms": 1e3 * float(np.median(latencies))}


# --- the reference ---------------------------------------------------------------------------


def reference_vs_ours(
    market: Market,
    m: int,
    queries: list[tuple[np.ndarray, np.ndarray]],
    ours: list[Any],
    work: Path,
    row: Row,
) -> None:
    count = REFERENCE_QUERIES[m]
    data = work / f"reference-{m}.npz"
    np.savez(
        data,
        z=market.z[:m],
        beta=market.beta[:m],
        qz=np.stack([z for z, _ in queries[:count]]),
        qbeta=np.stack([b for _, b in queries[:count]]),
    )
    script = Path(__file__).resolve()
    done = subprocess.run(
        [str(ref_env.venv_python()), str(script), "--reference-worker", str(data)],
        capture_output=True,
        text=True,
        env=ref_env.single_thread_env(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the reference worker failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    row.reference_ms = 1e3 * float(np.median(result["seconds"]))
    row.reference_top1_match = float(
        np.mean([ours[q].singles[0].learnware_id == result["top1"][q] for q in range(count)])
    )
    matches = []
    for q in range(count):
        theirs = set(result["mixture"][q])
        mine = set(ours[q].mixture.learnware_ids) if ours[q].mixture else set()
        matches.append(float(theirs == mine))
    row.reference_mixture_match = float(np.mean(matches))


def reference_worker(data_path: Path) -> None:
    """Runs in the reference venv: EasyStatSearcher over the learnwares, per query."""
    import logging

    import torch
    from learnware.learnware import Learnware
    from learnware.market.base import BaseUserInfo
    from learnware.market.easy.searcher import EasyStatSearcher
    from learnware.specification import RKMETableSpecification, Specification

    ref_env._limit_threads()
    logging.disable(logging.CRITICAL)

    def rkme(z: np.ndarray, beta: np.ndarray) -> Any:
        spec = RKMETableSpecification(gamma=GAMMA)
        spec.z = torch.from_numpy(np.asarray(z, dtype=np.float64))
        spec.beta = torch.from_numpy(np.asarray(beta, dtype=np.float64))
        spec.num_points = len(beta)
        return spec

    data = np.load(data_path)
    learnwares = [
        Learnware(
            f"lw-{i:08d}",
            None,
            Specification(stat_spec={"RKMETableSpecification": rkme(z, b)}),
            "",
        )
        for i, (z, b) in enumerate(zip(data["z"], data["beta"], strict=True))
    ]
    searcher = EasyStatSearcher(None)
    seconds, top1, mixtures = [], [], []
    for qz, qb in zip(data["qz"], data["qbeta"], strict=True):
        user = BaseUserInfo(stat_info={"RKMETableSpecification": rkme(qz, qb)})
        started = time.perf_counter()
        result = searcher(learnwares, user, max_search_num=5, search_method="greedy")
        seconds.append(time.perf_counter() - started)
        top1.append(result.get_single_results()[0].learnware.id)
        multiple = result.get_multiple_results()
        mixtures.append([lw.id for lw in multiple[0].learnwares] if multiple else [])
    print(json.dumps({"seconds": seconds, "top1": top1, "mixture": mixtures}))


# --- report ----------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def report(rows: list[Row], versions: dict[str, Any], elapsed: float, command: str) -> None:
    print(f"# search benchmark: `{command}`")
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, one BLAS/OpenMP/FAISS thread; reference "
        f"learnware {versions.get('learnware')} (torch {versions.get('torch')}); "
        f"d={D}, K={K}, gamma={GAMMA}; {elapsed:.0f} s in all; load average at the end "
        f"{os.getloadavg()[0]:.1f} (a machine shared with other work).\n"
    )
    print(
        "| M | index | build s | index B/lw | RSS B/lw | p50 ms | p99 ms | p50 CPU ms "
        "| p50 singles ms "
        f"| top-1 | recall@10 | exact queries | gRPC /s 1 worker | gRPC /s {GRPC_WORKERS} workers "
        "| gRPC p50 ms | gRPC singles /s "
        "| reference ms | "
        "speed ratio | ref top-1 same | ref mixture same |"
    )
    print("|" + "---|" * 20)
    for r in rows:
        print(
            f"| {r.m:,} | {r.index_type} | {r.build_s:.1f} | {r.index_bytes_per_learnware:,.0f} "
            f"| {r.rss_bytes_per_learnware:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.p50_cpu_ms:.2f} | {r.p50_singles_ms:.2f} | {r.top1:.3f} | {r.recall10:.3f} "
            f"| {r.exact_queries} "
            f"| {_fmt(r.extra.get('grpc_qps_1'), '{:.0f}')} "
            f"| {_fmt(r.grpc_qps, '{:.0f}')} | {_fmt(r.grpc_p50_ms)} "
            f"| {_fmt(r.extra.get('grpc_qps_singles'), '{:.0f}')} "
            f"| {_fmt(r.reference_ms, '{:.0f}')} "
            f"| {_fmt(r.speedup, '{:.0f}x')} | {_fmt(r.reference_top1_match)} "
            f"| {_fmt(r.reference_mixture_match)} |"
        )
    by_m = {str(r.m): r for r in rows}
    with_reference = [r for r in rows if r.reference_ms]
    largest = max(with_reference, key=lambda r: r.m) if with_reference else None
    grpc_rows = [r for r in rows if r.grpc_qps is not None]
    summary = {
        "top1_agreement": {m: round(r.top1, 4) for m, r in by_m.items()},
        "recall_at_10": {m: round(r.recall10, 4) for m, r in by_m.items()},
        "p50_ms": {m: round(r.p50_ms, 3) for m, r in by_m.items()},
        "p99_ms": {m: round(r.p99_ms, 3) for m, r in by_m.items()},
        "p50_singles_ms": {m: round(r.p50_singles_ms, 3) for m, r in by_m.items()},
        "p50_cpu_ms": {m: round(r.p50_cpu_ms, 3) for m, r in by_m.items()},
        "build_s": {m: round(r.build_s, 2) for m, r in by_m.items()},
        "index_bytes_per_learnware": {
            m: round(r.index_bytes_per_learnware) for m, r in by_m.items()
        },
        "grpc_qps": round(max(grpc_rows, key=lambda r: r.m).grpc_qps or 0.0, 1)
        if grpc_rows
        else None,
        "grpc_qps_m": max(grpc_rows, key=lambda r: r.m).m if grpc_rows else None,
        "grpc_workers": GRPC_WORKERS if grpc_rows else None,
        "grpc_qps_one_worker": round(max(grpc_rows, key=lambda r: r.m).extra["grpc_qps_1"], 1)
        if grpc_rows
        else None,
        "grpc_qps_singles": round(max(grpc_rows, key=lambda r: r.m).extra["grpc_qps_singles"], 1)
        if grpc_rows
        else None,
        "speedup_vs_reference": round(largest.speedup or 0.0, 1) if largest else None,
        "speedup_m": largest.m if largest else None,
        "reference_ms": {str(r.m): round(r.reference_ms or 0.0, 1) for r in with_reference},
    }
    print()
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="M up to 10^4 (a few minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", help="market sizes (overrides --quick)")
    parser.add_argument("--grpc-client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grpc_client:
        address, path, seconds = args.grpc_client
        data = Path(path).read_bytes()
        print(json.dumps(asyncio.run(grpc_client(address, data, float(seconds)))))
        return 0
    if args.reference_worker:
        reference_worker(Path(args.reference_worker))
        return 0

    import faiss

    faiss.omp_set_num_threads(1)
    sizes = tuple(args.sizes) if args.sizes else QUICK_SIZES if args.quick else FULL_SIZES
    for m in sizes:
        EXACT_QUERIES.setdefault(m, 20)
        QUICK_EXACT_QUERIES.setdefault(m, 20)
    command = "python bench/search.py" + (" --quick" if args.quick else "")
    if args.sizes:
        command += " --sizes " + " ".join(str(m) for m in sizes)
    started = time.perf_counter()
    versions = ref_env.ensure_venv(_log) if set(sizes) & set(REFERENCE_SIZES) else {}
    _log(f"generating {max(sizes):,} learnwares ...")
    market = make_market(max(sizes))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lwdock-search-bench-") as work:
        for m in sorted(sizes):
            rows.append(run_size(market, m, Path(work), args.quick))
    report(rows, versions, time.perf_counter() - started, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
