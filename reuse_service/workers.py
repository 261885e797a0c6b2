"""Sandboxed worker processes and their pool.

A `SandboxWorker` is one runner process (normally inside bubblewrap) holding one loaded
learnware; calls go one at a time over its stdin/stdout frames (worker/frames.py), each under
a wall-clock deadline. A worker that misses its deadline, sends too much, dies, or breaks the
protocol (model code can write to the runner's pipe: bad JSON, npy headers that do not match
their payload, mistyped fields) is killed and never reused: the call fails
(DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE) and the next call starts a fresh one.
Errors raised by the learnware's own code come back as LearnwareModelFailed and leave the
worker warm.

`WorkerPool` keeps at most `max_workers` warm workers, one per package, least recently used
first out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lwdock.errors import (
    DeadlineExceeded,
    LearnwareModelFailed,
    LwdockError,
    ResourceExhausted,
    Unavailable,
)
from reuse_service import metrics
from reuse_service.sandbox import SandboxLimits
from reuse_service.worker import frames

log = logging.getLogger("lwdock.reuse.workers")

STDERR_TAIL_BYTES = 8192


@dataclass
class WorkerSpec:
    """How to start a worker: its argv, the runner's init message, its limits."""

    key: str  # the package sha256
    learnware: str  # for messages
    argv: list[str]
    init: dict[str, Any]
    limits: SandboxLimits
    new_session: bool = False  # unsandboxed runs: own process group, killed as a group


@dataclass
class LoadedModel:
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code > 128:  # bubblewrap reports its child's death by signal N as 128 + N
        code = 128 - code
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)", "SIGSEGV": " (crashed)"}
        return f"killed by {name}{hint.get(name, '')}"
    return f"exited with status {code}"


F_SETPIPE_SZ = 1031  # Linux fcntl
PIPE_BYTES = 1 << 20


def _widen_pipe(stream: object) -> None:
    """1 MiB pipe buffers instead of 64 KiB: arrays cross in fewer wake-ups."""
    transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


@dataclass
class SandboxWorker:
    spec: WorkerSpec
    process: asyncio.subprocess.Process | None = None
    model: LoadedModel | None = None
    calls: int = 0
    cpu_s: float = 0.0
    dead: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stderr: bytearray = field(default_factory=bytearray)
    _stderr_task: asyncio.Task[None] | None = None

    @property
    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self._stderr += chunk
            if len(self._stderr) > STDERR_TAIL_BYTES:
                del self._stderr[: len(self._stderr) - STDERR_TAIL_BYTES]

    async def start(self, timeout_s: float) -> LoadedModel:
        """Start the process and load the learnware; LearnwareModelFailed if its code fails."""
        self.process = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=self.spec.new_session,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        for pipe in (self.process.stdin, self.process.stdout):
            _widen_pipe(pipe)
        try:
            reply = await self._exchange(timeout_s, self.spec.init, None, stage="load")
        except BaseException:
            metrics.WORKER_STARTS.labels("failed").inc()
            await self.kill("load_failed")
            raise
        metrics.WORKER_STARTS.labels("ok").inc()
        self.cpu_s = reply["cpu_s"]
        shapes = (reply.get("input_shape"), reply.get("output_shape"))
        self.model = LoadedModel(*(tuple(s) if s is not None else None for s in shapes))
        return self.model

    async def predict(self, x: np.ndarray, timeout_s: float) -> np.ndarray:
        async with self._lock:
            if self.dead:
                raise Unavailable(f"the worker of {self.spec.learnware} was stopped; retry")
            reply = await self._exchange(timeout_s, {"op": "predict"}, x, stage="predict")
            self.calls += 1
            self.cpu_s = reply["cpu_s"] or self.cpu_s
            return reply["array"]

    async def _exchange(
        self, timeout_s: float, message: dict[str, Any], array: np.ndarray | None, *, stage: str
    ) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._send_receive(message, array, stage), timeout_s)
        except TimeoutError:
            await self.kill("deadline")
            raise DeadlineExceeded(
                f"learnware {self.spec.learnware} did not finish {stage} within {timeout_s:.1f} s;"
                " its sandbox was stopped"
            ) from None
        except asyncio.CancelledError:
            # The caller went away mid-call: the worker's reply would be read by the next
            # call as its own. Never reuse it.
            self._signal_kill("cancelled")
            raise
        except (EOFError, asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            code = await self._wait_exit()
            await self.kill("died")
            tail = self.stderr_tail.strip().splitlines()[-5:]
            raise Unavailable(
                f"the sandbox of learnware {self.spec.learnware} died during {stage} "
                f"({_describe_exit(code)}); the next call starts a new one"
                + (f"; stderr: {' | '.join(tail)}" if tail else ""),
                retry_delay_s=0.1,
            ) from None
        except LwdockError:
            raise  # the model's own error, or a limit already enforced (and reported) above
        except Exception as exc:
            # Model code shares the runner's process and can write to the protocol pipe:
            # malformed JSON, lying npy headers, wrong field types. The pipe is no longer in
            # step, so the worker is never reused.
            await self.kill("protocol")
            raise Unavailable(
                f"learnware {self.spec.learnware} broke the worker protocol during {stage} "
                f"({type(exc).__name__}: {str(exc)[:200]}); its sandbox was stopped and the "
                "next call starts a new one",
                retry_delay_s=0.1,
            ) from None

    async def _wait_exit(self) -> int | None:
        assert self.process is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 2.0)
        return self.process.returncode

    async def _send_receive(
        self, message: dict[str, Any], array: np.ndarray | None, stage: str
    ) -> dict[str, Any]:
        assert self.process is not None
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(frames.encode_json(message))
        if array is not None:
            stdin.write(frames.array_bytes(array))
        await stdin.drain()
        reply = await self._read_json(stdout)
        if not reply.get("ok"):
            error = str(reply.get("error") or f"{stage} failed")
            detail = str(reply.get("log") or "")
            raise WorkerError(self.spec.learnware, error, detail + self.stderr_tail[-2000:])
        _check_reply(reply, stage)
        if stage == "predict":
            reply["array"] = await self._read_array(stdout)
        return reply

    async def _read_json(self, stdout: asyncio.StreamReader) -> dict[str, Any]:
        (size,) = frames.LENGTH.unpack(await stdout.readexactly(frames.LENGTH.size))
        if size > frames.MAX_JSON_BYTES:
            await self.kill("protocol")
            raise Unavailable(f"learnware {self.spec.learnware} broke the worker protocol")
        message = json.loads(await stdout.readexactly(size))
        if not isinstance(message, dict):
            await self.kill("protocol")
            raise Unavailable(f"learnware {self.spec.learnware} broke the worker protocol")
        return message

    async def _read_array(self, stdout: asyncio.StreamReader) -> np.ndarray:
        (size,) = frames.LENGTH.unpack(await stdout.readexactly(frames.LENGTH.size))
        limit = self.spec.limits.max_output_bytes
        if size > limit:
            await self.kill("output_too_large")
            raise ResourceExhausted(
                f"learnware {self.spec.learnware} returned {size:,} bytes, more than the limit "
                f"of {limit:,}; its sandbox was stopped",
                subject=self.spec.learnware,
                limit=str(limit),
            )
        # A header that does not describe the payload is a protocol error (see _exchange).
        return frames.load_array_checked(await stdout.readexactly(size))

    def _signal_kill(self, reason: str) -> bool:
        """Mark dead and SIGKILL at once (no waiting); False if it was dead already."""
        if self.dead:
            return False
        self.dead = True
        metrics.WORKER_KILLS.labels(reason).inc()
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self.spec.new_session:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
        return True

    async def kill(self, reason: str) -> None:
        if not self._signal_kill(reason):
            return
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5.0)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        if process is not None and process.stdin is not None:
            process.stdin.close()


def _check_reply(reply: dict[str, Any], stage: str) -> None:
    """The fields of a successful reply, typed (ValueError otherwise); cpu_s becomes a float."""
    cpu = reply.get("cpu_s")
    if cpu is None:
        cpu = 0.0
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0 <= cpu < math.inf:
        raise ValueError(f"cpu_s {cpu!r} is not a number of seconds")
    reply["cpu_s"] = float(cpu)
    if stage == "load":
        for key in ("input_shape", "output_shape"):
            value = reply.get(key)
            if value is not None and not (
                isinstance(value, list)
                and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
            ):
                raise ValueError(f"{key} {value!r} is not a list of integers")


class WorkerError(LearnwareModelFailed):
    """The learnware's own code raised (load or predict); `log` holds its traceback/stderr."""

    def __init__(self, learnware: str, message: str, log_text: str = "") -> None:
        super().__init__(learnware, f"learnware {learnware}: {message}")
        self.log = log_text


class WorkerPool:
    """Warm workers by package sha256, LRU-bounded; starting is once per key at a time."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, max_workers)
        self._workers: OrderedDict[str, SandboxWorker] = OrderedDict()
        self._starting: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._workers)

    def keys(self) -> set[str]:
        """The package sha256 of every warm worker (their sandboxes bind the package folder)."""
        return set(self._workers)

    def _update_gauge(self) -> None:
        metrics.WORKERS.set(len(self._workers))

    async def get(
        self, spec_factory: Callable[[], WorkerSpec], key: str, timeout_s: float
    ) -> SandboxWorker:
        worker = self._workers.get(key)
        if worker is not None and not worker.dead:
            self._workers.move_to_end(key)
            return worker
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            worker = self._workers.get(key)
            if worker is not None and not worker.dead:
                return worker
            if self.closed:
                raise Unavailable("reuse_service is stopping")
            worker = SandboxWorker(spec_factory())
            await worker.start(timeout_s)
            self._workers[key] = worker
            self._workers.move_to_end(key)
            await self._evict()
            self._update_gauge()
            log.info("sandbox worker started", extra={"learnware": worker.spec.learnware})
            return worker

    async def _evict(self) -> None:
        while len(self._workers) > self.max_workers:
            _, oldest = self._workers.popitem(last=False)
            # Let a call in progress finish: kill once it releases the worker.
            self._retire(oldest, "evicted")

    def _retire(self, worker: SandboxWorker, reason: str) -> None:
        task = asyncio.create_task(self._kill_when_idle(worker, reason))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _kill_when_idle(worker: SandboxWorker, reason: str) -> None:
        async with worker._lock:
            await worker.kill(reason)

    async def run(
        self,
        spec_factory: Callable[[], WorkerSpec],
        key: str,
        x: np.ndarray,
        timeout_s: float,
        *,
        deadline: Callable[[], float] | None = None,
    ) -> np.ndarray:
        """Predict with the warm worker of `key` (started if needed). A worker that failed
        other than by its model's own error is dropped from the pool."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        worker = await self.get(spec_factory, key, timeout_s)
        try:
            result = await worker.predict(x, max(0.1, end - loop.time()))
        except LearnwareModelFailed:
            metrics.MEMBER_CALLS.labels("model_error").inc()
            raise
        except LwdockError:
            metrics.MEMBER_CALLS.labels("sandbox_error").inc()
            self.discard(key, worker)
            raise
        metrics.MEMBER_CALLS.labels("ok").inc()
        limit = worker.spec.limits
        if worker.cpu_s > 0.8 * limit.cpu_lifetime_s:  # retire before the hard CPU limit
            self.discard(key, worker)
            self._retire(worker, "cpu_lifetime")
        return result

    def discard(self, key: str, worker: SandboxWorker) -> None:
        if self._workers.get(key) is worker:
            del self._workers[key]
            self._update_gauge()

    async def close(self) -> None:
        self.closed = True
        workers = list(self._workers.values())
        self._workers.clear()
        self._update_gauge()
        for worker in workers:
            await worker.kill("shutdown")
