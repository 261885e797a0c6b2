"""A whole suite for SDK, CLI and end-to-end tests: the four real services in the test's event
loop on loopback ports, wired to each other (the registry's check worker calls reuse_service,
reuse_service and search_service read the registry), a scratch PostgreSQL database, a blob
directory and a tokens file with the local admin token under a temporary LWDOCK_HOME (as
`lwdock up` lays it out), plus small learnwares built with the SDK.

The conftest `suite` fixture has no tokens and no wiring between services, so these tests
start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from lwdock.client.config import Endpoints
from lwdock.embedded_db import scratch_database
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.settings import Settings
from lwdock.tokens import add_token, ensure_admin_token, new_token
from tests.conftest import service_settings, wait_serving

SERVICE_NAMES = {
    "spec": "lwdock.spec.v1.SpecService",
    "registry": "lwdock.registry.v1.RegistryService",
    "search": "lwdock.search.v1.SearchService",
    "reuse": "lwdock.reuse.v1.ReuseService",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    home: Path
    settings: Settings
    handles: dict[str, ServerHandle]
    admin_token: str
    reader_token: str

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(**{name: h.address for name, h in self.handles.items()})

    def env(self) -> dict[str, str]:
        """Environment for a CLI subprocess: the stack's addresses and LWDOCK_HOME (whose
        admin.token the CLI picks up), nothing else of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LWDOCK_")}
        env["LWDOCK_HOME"] = str(self.home)
        for name, handle in self.handles.items():
            env[f"LWDOCK_{name.upper()}_ADDRESS"] = handle.address
        return env


def _factories() -> dict[str, Any]:
    from registry_service.checks import CheckWorkerOptions
    from registry_service.server import build_app as registry_app
    from reuse_service.server import build_app as reuse_app
    from search_service.server import build_app as search_app
    from spec_service.server import build_app as spec_app

    fast_checks = CheckWorkerOptions(
        idle_interval_s=0.1, backoff_initial_s=0.2, backoff_max_s=1.0, call_timeout_s=90.0
    )
    return {
        "spec": spec_app,
        "reuse": reuse_app,
        "registry": lambda s: registry_app(s, check_worker=fast_checks),
        "search": search_app,
    }


def _prepare_home(home: Path) -> tuple[Path, Path, str]:
    """As `lwdock up` does: tokens.json with the admin token (+ a reader's) and admin.token."""
    home.mkdir(parents=True, exist_ok=True)
    tokens_file, admin_file = ensure_admin_token(home)
    reader_token = new_token()
    add_token(tokens_file, reader_token, "users/reader", "reader")
    return tokens_file, admin_file, reader_token


@contextlib.asynccontextmanager
async def running_stack(database_url: str, home: Path) -> AsyncIterator[Stack]:
    """Start all four services (ports chosen first, so each knows the others' addresses)."""
    tokens_file, admin_file, reader_token = await asyncio.to_thread(_prepare_home, home)
    ports = {name: free_port() for name in SERVICE_NAMES}
    with scratch_database(database_url, "lwdock_sdk") as url:
        base = service_settings(
            home,
            url,
            tokens_file=tokens_file,
            blob_dir=home / "blobs",
            **{f"{name}_address": f"127.0.0.1:{port}" for name, port in ports.items()},
        )
        handles: dict[str, ServerHandle] = {}
        try:
            for name, factory in _factories().items():
                settings = base.model_copy(update={"port": ports[name]})
                handles[name] = await start(factory(settings), settings)
            for name, handle in handles.items():
                async with grpc.aio.insecure_channel(handle.address) as channel:
                    await wait_serving(channel, SERVICE_NAMES[name])
            yield Stack(home, base, handles, admin_file.read_text().strip(), reader_token)
        finally:
            for handle in handles.values():
                await handle.stop(base)


# -- learnwares for the tests -----------------------------------------------------------------


@dataclass
class Trained:
    """A small digits classifier packed as a learnware, with the data it was trained on."""

    model: Any
    X: np.ndarray
    y: np.ndarray
    package: bytes
    semantic: Any


def digits_learnware(
    classes: tuple[int, ...], name: str, *, seed: int = 0, rows: int = 120, broken: bool = False
) -> Trained:
    """Logistic regression on some digits (pixels / 16), output: predicted labels (1,).
    broken=True calls predict_proba while declaring labels (1,): the package is valid as data,
    but its outputs have the wrong shape, so the check must reject it."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from lwdock.client import fit_table, pack_model, semantic

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.flatnonzero(np.isin(y, classes)))[:rows]
    model = LogisticRegression(max_iter=1000).fit(X[idx], y[idx])
    spec = fit_table(X[idx], reduced_set_size=30, seed=seed)
    package = pack_model(
        model,
        spec,
        input_shape=64,
        output_shape=1,
        predict_method="predict_proba" if broken else "predict",
    )
    sem = semantic(
        name=name,
        description=f"test learnware: logistic regression on digits {classes}",
        input_dimension=64,
        output_dimension=10,
    )
    return Trained(model, X[idx], y[idx], package, sem)


async def run_cli(stack: Stack, *args: str, limit_s: float = 120) -> tuple[int, str, str]:
    """`lwdock ARGS` as a subprocess (without blocking the loop the services run in)."""
    from tests.conftest import venv_bin

    process = await asyncio.create_subprocess_exec(
        venv_bin("lwdock"),
        *args,
        env=stack.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), limit_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
