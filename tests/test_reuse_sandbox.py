"""Sandboxed runs without gRPC: the bubblewrap command line, the reference fixture through a
real sandbox worker, and hostile packages made here, each contained and reported while the
good learnware keeps answering from its warm worker."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import sklearn.linear_model

from lwdock.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    LearnwareModelFailed,
    ResourceExhausted,
    Unavailable,
)
from lwdock.registry_client import RegistryClient
from reuse_service import metrics
from reuse_service.engine import Member, ReuseEngine
from reuse_service.packages import (
    PackageStore,
    missing_requirements,
    require_runtime,
    requirement_name,
)
from reuse_service.runtime import RuntimeState
from reuse_service.sandbox import (
    SANDBOX_PACKAGE_DIR,
    SandboxStatus,
    bwrap_argv,
    probe_bubblewrap,
)
from reuse_service.workers import SandboxWorker, WorkerError, WorkerPool, WorkerSpec
from tests.conftest import ROOT
from tests.reuse_support import (
    FIXTURES,
    SMALL_SPEC,
    TIGHT,
    hostile_model,
    make_package,
    model_package,
    semantic,
)

X = np.random.default_rng(1).normal(size=(20, 3))


class Payload:
    """Unpickling it runs `code` (what a hostile model.pkl does)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.code,))


@pytest_asyncio.fixture(scope="module")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ReuseEngine]:
    state = RuntimeState()
    state.sandbox = await probe_bubblewrap()
    if not state.sandbox.available:
        pytest.skip(f"no sandbox on this host: {state.sandbox.reason}")
    home = tmp_path_factory.mktemp("reuse-home")
    engine = ReuseEngine(
        state, TIGHT, PackageStore(home / "packages"), WorkerPool(8), RegistryClient("127.0.0.1:9")
    )
    yield engine
    await engine.pool.close()


def member(engine: ReuseEngine, name: str, data: bytes, dim: int = 3) -> Member:
    return Member(name, None, engine.packages.add(data, semantic("test-learnware", dim)))


@pytest.fixture(scope="module")
def good(engine: ReuseEngine) -> tuple[Member, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(200, 3))
    model = sklearn.linear_model.LinearRegression().fit(x, x @ [1.0, -2.0, 0.5] + 3)
    data = model_package(model, 3, (1,), SMALL_SPEC)
    return member(engine, "learnwares/good", data), model.predict(X)


async def still_serving(engine: ReuseEngine, good: tuple[Member, np.ndarray]) -> None:
    output = await engine.run(good[0], X, TIGHT.call_timeout_s)
    np.testing.assert_allclose(output, good[1])


def test_bwrap_argv_isolates(tmp_path: Path) -> None:
    for as_root in (True, False):
        argv, uid = bwrap_argv("/usr/bin/bwrap", tmp_path, as_root=as_root, limits=TIGHT)
        joined = " ".join(argv)
        assert "--unshare-net" in argv or "--unshare-all" in argv
        assert "--die-with-parent" in argv and "--new-session" in argv and "--clearenv" in argv
        assert f"--ro-bind {tmp_path} /learnware" in joined
        assert "--bind " not in joined  # nothing writable but the private /tmp
        assert f"--size {TIGHT.tmp_bytes} --perms 1777 --tmpfs /tmp" in joined
        assert f"--size {TIGHT.tmp_bytes} --perms 1777 --tmpfs /dev/shm" in joined
        last_mounts = argv[argv.index("--remount-ro") : -4]  # after every mount: read-only
        assert last_mounts == ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
        assert "/etc/shadow" not in joined and "--ro-bind / /" not in joined
        assert uid == (65534 if as_root else None)
    assert requirement_name("scikit-learn==1.9.1") == "scikit-learn"
    assert requirement_name("python=3.8") is None and requirement_name("learnware") is None
    assert missing_requirements(("numpy>=1", "no-such-dist-lwdock==1.0", "pip")) == [
        "no-such-dist-lwdock==1.0"
    ]


def test_requirements_the_runtime_lacks_are_refused(engine: ReuseEngine) -> None:
    data = make_package(
        hostile_model("return X[:, 0]"),
        requirements="scikit-learn==1.9.1\nlwdock-missing-one>=2\ntorch\nlwdock-missing-two\n",
    )
    package = engine.packages.add(data, semantic("needs-more", 3))
    with pytest.raises(FailedPrecondition) as caught:
        require_runtime(package)
    assert caught.value.reason == "REQUIREMENTS_NOT_PROVIDED"
    assert [v.subject for v in caught.value.violations] == [
        "lwdock-missing-one>=2",
        "lwdock-missing-two",
    ]
    assert "lwdock-missing-one>=2, lwdock-missing-two" in caught.value.message


async def test_reference_fixture_predicts_exactly(engine: ReuseEngine) -> None:
    data = (FIXTURES / "learnware_digits_svc.zip").read_bytes()
    sem = semantic("digits-svc-0to4", 64, task="Classification", out_dim=5)
    fixture = Member("learnwares/digits", None, engine.packages.add(data, sem))
    x = np.load(FIXTURES / "digits_classes0to4_first100.npy")
    expected = np.load(FIXTURES / "digits_classes0to4_first100_pred.npy")
    np.testing.assert_array_equal(await engine.run(fixture, x, 30.0), expected)
    # Warm: the same worker answers again.
    np.testing.assert_array_equal(await engine.run(fixture, x[:7], 30.0), expected[:7])


async def test_reads_outside_its_folder(engine: ReuseEngine, good: tuple, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    body = f"""
    found = []
    outside = [{str(secret)!r}, "/etc/shadow", "/root/.bash_history", {str(ROOT / "README.md")!r}]
    for path in outside:
        try:
            found.append(open(path).read())
        except OSError as exc:
            pass
    if found:
        return np.array([len(f) for f in found] * len(X))[: len(X)].astype(float)
    raise FileNotFoundError("nothing outside the package is visible")
    """
    bad = member(engine, "learnwares/reader", make_package(hostile_model(body)))
    with pytest.raises(WorkerError) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert "nothing outside the package is visible" in caught.value.message
    assert "TOP-SECRET" not in caught.value.message + caught.value.log
    await still_serving(engine, good)


async def test_writes_outside_tmp(engine: ReuseEngine, good: tuple, tmp_path: Path) -> None:
    marker = tmp_path / "escaped.txt"
    body = f"""
    open("/tmp/scratch.txt", "w").write("fine")  # its private /tmp is writable
    refused = []
    for path in ["/learnware/evil.txt", {str(marker)!r}, "/usr/evil.txt", "/evil.txt"]:
        try:
            open(path, "w").write("x")
        except OSError as exc:
            refused.append(type(exc).__name__)
        else:
            return np.zeros(len(X))
    try:
        open("/tmp/big.bin", "wb").write(b"0" * (4 * 1024 * 1024))  # over RLIMIT_FSIZE
    except OSError as exc:
        refused.append("EFBIG" if exc.errno == 27 else str(exc))
    raise PermissionError("refused: " + ",".join(refused))
    """
    bad = member(engine, "learnwares/writer", make_package(hostile_model(body)))
    with pytest.raises(WorkerError) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert "refused:" in caught.value.message and "EFBIG" in caught.value.message
    assert not marker.exists()
    assert not (bad.package.files / "evil.txt").exists()
    await still_serving(engine, good)


async def test_opens_a_socket_to_the_host(engine: ReuseEngine, good: tuple) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        body = f"""
        with socket.create_connection(("127.0.0.1", {port}), timeout=2) as conn:
            conn.sendall(b"stolen")
        return np.zeros(len(X))
        """
        bad = member(engine, "learnwares/network", make_package(hostile_model(body)))
        with pytest.raises(WorkerError) as caught:
            await engine.run(bad, X, TIGHT.call_timeout_s)
        assert "OSError" in caught.value.message or "Error" in caught.value.message
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    await still_serving(engine, good)


def _processes_of(uid: int) -> int:
    """Live (not zombie) processes of `uid` on this host."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    state = stat.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            count += state not in (b"Z", b"X")
    return count


async def test_fork_bomb(engine: ReuseEngine, good: tuple) -> None:
    body = """
    made = 0
    while True:
        try:
            if os.fork() == 0:
                while True:
                    try:
                        os.fork()
                    except OSError:
                        time.sleep(0.01)
            made += 1
        except OSError as exc:
            raise RuntimeError(f"fork refused after {made} children: {exc}")
    """
    bad = member(engine, "learnwares/forkbomb", make_package(hostile_model(body)))
    before = _processes_of(65534)
    with pytest.raises((WorkerError, DeadlineExceeded, Unavailable)) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    if isinstance(caught.value, WorkerError):
        assert "fork refused" in caught.value.message
    if os.geteuid() == 0:  # the sandbox runs as uid 65534: what it left behind is gone
        assert _processes_of(65534) <= before + 1  # at most the bomb's own (warm) runner
    await still_serving(engine, good)


async def test_allocates_50_gb(engine: ReuseEngine, good: tuple) -> None:
    body = """
    hog = np.ones(50 * 1024**3 // 8)
    return hog[: len(X)]
    """
    bad = member(engine, "learnwares/hog", make_package(hostile_model(body)))
    with pytest.raises(WorkerError) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert "MemoryError" in caught.value.message
    await still_serving(engine, good)


async def test_loops_forever(engine: ReuseEngine, good: tuple) -> None:
    body = """
    while True:
        pass
    """
    bad = member(engine, "learnwares/loop", make_package(hostile_model(body)))
    with pytest.raises((Unavailable, DeadlineExceeded)) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert "CPU time limit" in caught.value.message or "did not finish" in caught.value.message
    await still_serving(engine, good)


async def test_returns_2_gb(engine: ReuseEngine, good: tuple) -> None:
    body = """
    return np.broadcast_to(np.float64(1.0), (len(X), 2 * 1024**3 // 8 // len(X)))
    """
    bad = member(engine, "learnwares/flood", make_package(hostile_model(body)))
    with pytest.raises(ResourceExhausted) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert "more than the limit" in caught.value.message
    await still_serving(engine, good)


async def test_pickle_runs_code_at_load(engine: ReuseEngine, good: tuple, tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(Payload(f"open({str(marker)!r}, 'w').write('pwned')"))
    data = make_package(
        hostile_model("return np.zeros(len(X))", init_body="import pickle; pickle.load(open(os.path.join(os.path.dirname(__file__), 'model.pkl'), 'rb'))"),  # noqa: E501
        files={"model.pkl": payload},
    )  # fmt: skip
    bad = member(engine, "learnwares/pickle", data)
    with pytest.raises(WorkerError) as caught:
        await engine.run(bad, X, TIGHT.call_timeout_s)
    assert caught.value.message.startswith("learnware learnwares/pickle: load:")
    assert "FileNotFoundError" in caught.value.message
    assert not marker.exists()
    await still_serving(engine, good)


async def test_dead_worker_fails_unavailable_then_is_replaced(
    engine: ReuseEngine, good: tuple
) -> None:
    body = """
    if X[0, 0] > 1e9:
        os._exit(3)
    return X[:, 0] * 2
    """
    fragile = member(engine, "learnwares/fragile", make_package(hostile_model(body)))
    np.testing.assert_allclose(await engine.run(fragile, X, TIGHT.call_timeout_s), X[:, 0] * 2)
    starts = metrics.WORKER_STARTS.labels("ok")._value.get()
    boom = X.copy()
    boom[0, 0] = 1e10
    with pytest.raises(Unavailable) as caught:
        await engine.run(fragile, boom, TIGHT.call_timeout_s)
    assert "exited with status 3" in caught.value.message
    np.testing.assert_allclose(await engine.run(fragile, X, TIGHT.call_timeout_s), X[:, 0] * 2)
    assert metrics.WORKER_STARTS.labels("ok")._value.get() == starts + 1
    # A model that raises keeps its worker; a wrong row count is the model's failure.
    wrong = member(engine, "learnwares/short", make_package(hostile_model("return X[:1, 0]")))
    with pytest.raises(LearnwareModelFailed, match="returned shape"):
        await engine.run(wrong, X, TIGHT.call_timeout_s)
    await still_serving(engine, good)


async def test_no_sandbox_refuses_unless_allowed(engine: ReuseEngine, good: tuple) -> None:
    state = RuntimeState(sandbox=SandboxStatus(False, "", "bubblewrap (bwrap) is not installed"))
    refusing = ReuseEngine(state, TIGHT, engine.packages, WorkerPool(2), engine.registry)
    with pytest.raises(FailedPrecondition, match="bwrap"):
        await refusing.run(good[0], X, TIGHT.call_timeout_s)
    state.allow_unsandboxed = True  # development only: the runner as a plain child process
    try:
        np.testing.assert_allclose(await refusing.run(good[0], X, 30.0), good[1])
    finally:
        await refusing.pool.close()


async def test_pool_keeps_at_most_max_workers_lru(engine: ReuseEngine, good: tuple) -> None:
    small = ReuseEngine(engine.state, TIGHT, engine.packages, WorkerPool(1), engine.registry)
    other = member(engine, "learnwares/other", make_package(hostile_model("return X[:, 1]")))
    evicted = metrics.WORKER_KILLS.labels("evicted")._value.get()
    try:
        np.testing.assert_allclose(await small.run(good[0], X, 30.0), good[1])
        first = small.pool._workers[good[0].package.sha256]
        np.testing.assert_allclose(await small.run(other, X, 30.0), X[:, 1])
        assert len(small.pool) == 1 and good[0].package.sha256 not in small.pool._workers
        assert first.process is not None
        for _ in range(100):  # the evicted worker is killed once idle
            if first.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert first.dead and first.process.returncode is not None
        assert metrics.WORKER_KILLS.labels("evicted")._value.get() == evicted + 1
        np.testing.assert_allclose(await small.run(good[0], X, 30.0), good[1])  # cold again
    finally:
        await small.pool.close()


async def test_a_call_abandoned_mid_predict_never_leaks_its_reply(engine: ReuseEngine) -> None:
    body = """
    if X[0, 0] > 1e9:
        time.sleep(3)
    return X[:, 0]
    """
    slow = member(engine, "learnwares/slow", make_package(hostile_model(body)))
    np.testing.assert_allclose(await engine.run(slow, X, TIGHT.call_timeout_s), X[:, 0])
    boom = X.copy()
    boom[0, 0] = 1e10
    with pytest.raises(TimeoutError):  # the caller's own deadline, e.g. a cancelled RPC
        await asyncio.wait_for(engine.run(slow, boom, TIGHT.call_timeout_s), 0.5)
    # The next call gets its own answer from a fresh worker, not the abandoned call's.
    np.testing.assert_allclose(await engine.run(slow, X, TIGHT.call_timeout_s), X[:, 0])


# The service as an unprivileged user (no capabilities, uid 65534) that owns its checkout and
# interpreter: a user namespace mapping uid/gid 65534 to the test's own. (setpriv to the host's
# 65534 fails here when the interpreter lives under a 0700 home, e.g. pyenv in /root.)
AS_SERVICE_USER = ("unshare", "--user", "--map-user=65534", "--map-group=65534")


async def test_unprivileged_sandbox_writes_only_its_tmp_and_a_small_shm(
    engine: ReuseEngine,
) -> None:
    """Non-root mode (`--unshare-all`): the sandbox user owns bwrap's root and /dev tmpfs, so
    they must be read-only, and /dev/shm a tmpfs of limits.tmp_bytes. Runs bwrap unprivileged
    through a real worker."""
    if shutil.which(AS_SERVICE_USER[0]) is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = await asyncio.to_thread(
        subprocess.run,
        [*AS_SERVICE_USER, "sh", "-c", "test $(id -u) = 65534 && grep -q 'CapEff:.*0000000000000000' /proc/self/status"],  # noqa: E501
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot start an unprivileged user namespace: {probe.stderr[-300:]}")
    body = """
    open("/tmp/scratch.txt", "w").write("fine")
    refused = []
    for path in ["/x", "/dev/x", "/learnware/x", "/lwdock/x"]:
        try:
            open(path, "w").write("x")
        except OSError as exc:
            refused.append(f"{path}:{exc.errno}")
        else:
            raise RuntimeError("wrote " + path)
    written = 0
    try:
        for i in range(64):
            with open(f"/dev/shm/x{i}", "wb") as out:
                out.write(b"0" * (1024 * 1024 - 4096))
            written += 1
    except OSError as exc:
        refused.append(f"shm:{exc.errno}")
    raise PermissionError(f"refused {refused} after {written} files in /dev/shm")
    """
    root = Path(tempfile.mkdtemp(prefix="lwdock-nonroot-"))
    try:
        os.chmod(root, 0o755)
        store = PackageStore(root / "packages")
        package = store.add(make_package(hostile_model(body)), semantic("nonroot", 3))
        argv, uid = bwrap_argv(engine.bwrap, package.files, as_root=False, limits=TIGHT)
        assert uid is None and "--unshare-all" in argv
        init = package.runner_init(SANDBOX_PACKAGE_DIR)
        init.update(limits=TIGHT.runner_limits(), drop_to_uid=None, reap_strays=True)
        spec = WorkerSpec(package.sha256, "learnwares/nonroot", [*AS_SERVICE_USER, *argv],
                          init, TIGHT)  # fmt: skip
        worker = SandboxWorker(spec)
        try:
            await worker.start(TIGHT.call_timeout_s)
            with pytest.raises(WorkerError) as caught:
                await worker.predict(X, TIGHT.call_timeout_s)
        finally:
            await worker.kill("test")
        message = caught.value.message
        refused = "['/x:30', '/dev/x:30', '/learnware/x:30', '/lwdock/x:30', 'shm:28']"
        assert f"refused {refused}" in message
        # EROFS (30) everywhere but /tmp; ENOSPC (28): /dev/shm holds at most limits.tmp_bytes.
        files = int(message.rsplit(" after ", 1)[1].split()[0])
        assert files <= TIGHT.tmp_bytes // (1024 * 1024)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# Model code shares the runner's process: it finds the protocol pipe (the one write-only pipe
# above stderr) and writes its own "reply" there when X[0, 0] is huge.
PROTOCOL_WRITER = """
import fcntl
import io
import stat
import struct
for fd in range(3, 64):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and (
            fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        ):
            break
    except OSError:
        pass
else:
    raise RuntimeError("no protocol pipe found")
def frame(data):
    return struct.pack("<Q", len(data)) + data
if X[0, 0] > 1e9:
    {forge}
    os.write(fd, forged)
    time.sleep(5)
return X[:, 0]
"""
FORGED = {
    "bad_json": 'forged = frame(b"{nope")',
    "mistyped_field": 'forged = frame(b\'{"ok": true, "cpu_s": "lots"}\')',
    "lying_npy_header": (
        "header = io.BytesIO(); np.lib.format.write_array_header_1_0(header, "
        "{'descr': '<f8', 'fortran_order': False, 'shape': (10**13,)}); "
        'forged = frame(b\'{"ok": true, "cpu_s": 0.1}\') + frame(header.getvalue() + bytes(16))'
    ),
}


@pytest.mark.parametrize("forge", sorted(FORGED))
async def test_a_model_writing_to_the_protocol_pipe_is_stopped_cleanly(
    engine: ReuseEngine, forge: str
) -> None:
    body = PROTOCOL_WRITER.replace("{forge}", FORGED[forge])
    forger = member(engine, f"learnwares/forger-{forge}", make_package(hostile_model(body)))
    np.testing.assert_allclose(await engine.run(forger, X, TIGHT.call_timeout_s), X[:, 0])
    starts = metrics.WORKER_STARTS.labels("ok")._value.get()
    kills = metrics.WORKER_KILLS.labels("protocol")._value.get()
    boom = X.copy()
    boom[0, 0] = 1e10
    with pytest.raises(Unavailable, match="broke the worker protocol during predict"):
        await engine.run(forger, boom, TIGHT.call_timeout_s)
    assert metrics.WORKER_KILLS.labels("protocol")._value.get() == kills + 1
    # The next call gets a fresh worker and a right answer.
    np.testing.assert_allclose(await engine.run(forger, X, TIGHT.call_timeout_s), X[:, 0])
    assert metrics.WORKER_STARTS.labels("ok")._value.get() == starts + 1


async def test_package_cache_keeps_at_most_max_packages_never_a_warm_workers_package(
    engine: ReuseEngine, tmp_path: Path
) -> None:
    pool = WorkerPool(2)
    store = PackageStore(tmp_path / "packages", max_packages=2, in_use=pool.keys)
    cached = ReuseEngine(engine.state, TIGHT, store, pool, engine.registry)
    column = {i: make_package(hostile_model(f"return X[:, {i}]")) for i in range(3)}
    sem = semantic("cached", 3)
    try:
        warm = Member("learnwares/warm", None, store.add(column[0], sem))
        np.testing.assert_allclose(await cached.run(warm, X, TIGHT.call_timeout_s), X[:, 0])
        first = store.add(column[1], sem)
        store.add(column[2], sem)  # one too many: the oldest that no worker binds goes
        on_disk = {p.name for p in store.root.iterdir() if not p.name.startswith(".")}
        assert on_disk == {warm.package.sha256, store.add(column[2], sem).sha256}
        assert not first.files.exists()
        # The warm worker still reads its package; the removed one unpacks again when used.
        np.testing.assert_allclose(await cached.run(warm, X, TIGHT.call_timeout_s), X[:, 0])
        again = Member("learnwares/again", None, store.add(column[1], sem))
        assert again.package.files.is_dir()
        np.testing.assert_allclose(await cached.run(again, X, TIGHT.call_timeout_s), X[:, 1])
        assert len([p for p in store.root.iterdir() if not p.name.startswith(".")]) == 2
        # After a restart the order comes from the folders' last use.
        assert PackageStore(store.root, max_packages=1).prune(keep=again.package.sha256) == [
            warm.package.sha256
        ]
    finally:
        await pool.close()
