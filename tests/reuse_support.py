"""Helpers for the reuse tests: learnware packages made in the test (the reference's layout:
learnware.yaml with !!python/tuple shapes, __init__.py importing learnware.model.base), their
semantic specs, and a small reuse service with tight sandbox limits."""

from __future__ import annotations

import io
import json
import pickle
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.rkme.fit import fit_table_rkme
from lwdock.semantic.checker import Semantic
from reuse_service.sandbox import SandboxLimits
from tests.conftest import FIXTURES

SMALL_SPEC = (FIXTURES / "table_small_d3.rkme.json").read_text()

# Small limits so every hostile package is stopped within a few seconds.
TIGHT = SandboxLimits(
    memory_bytes=1536 * 1024**2,
    cpu_s=2,
    load_cpu_s=20,
    cpu_lifetime_s=600,
    nproc=48,
    fsize_bytes=1024**2,
    tmp_bytes=16 * 1024**2,
    call_timeout_s=20.0,  # cold starts on a busy 2-core machine take several seconds
    max_output_bytes=64 * 1024**2,
)

PICKLE_MODEL = textwrap.dedent(
    """
    import os
    import pickle

    import numpy as np

    from learnware.model.base import BaseModel

    PREDICT_METHOD = "{method}"


    class PickleLoadedModel(BaseModel):
        def __init__(self, input_shape, output_shape, pickle_filename="model.pkl"):
            super().__init__(input_shape=input_shape, output_shape=output_shape)
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), pickle_filename)
            with open(path, "rb") as fd:
                self.model = pickle.load(fd)

        def predict(self, X):
            return getattr(self.model, PREDICT_METHOD)(X)
    """
)


def hostile_model(predict_body: str, init_body: str = "pass") -> str:
    """An __init__.py whose model runs `predict_body` (indented code returning an array)."""
    return textwrap.dedent(
        """
        import os
        import socket
        import sys
        import time

        import numpy as np

        from learnware.model.base import BaseModel


        class PickleLoadedModel(BaseModel):
            def __init__(self, input_shape, output_shape, **kwargs):
                super().__init__(input_shape=input_shape, output_shape=output_shape)
        {init}

            def predict(self, X):
        {body}
        """
    ).format(
        init=textwrap.indent(textwrap.dedent(init_body), " " * 8),
        body=textwrap.indent(textwrap.dedent(predict_body), " " * 8),
    )


def manifest(dim: int, output_shape: tuple[int, ...]) -> str:
    out = "\n".join(f"    - {d}" for d in output_shape)
    return (
        "model:\n  class_name: PickleLoadedModel\n  kwargs:\n"
        f"    input_shape: !!python/tuple\n    - {dim}\n"
        f"    output_shape: !!python/tuple\n{out}\n"
        "stat_specifications:\n- class_name: RKMETableSpecification\n"
        "  file_name: stat_spec.json\n  kwargs: {}\n  module_path: learnware.specification\n"
    )


def make_package(
    init_py: str,
    *,
    dim: int = 3,
    output_shape: tuple[int, ...] = (1,),
    spec_json: str = SMALL_SPEC,
    files: dict[str, bytes] | None = None,
    requirements: str = "",
) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("learnware.yaml", manifest(dim, output_shape))
        zf.writestr("__init__.py", init_py)
        zf.writestr("stat_spec.json", spec_json)
        if requirements:
            zf.writestr("requirements.txt", requirements)
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def model_package(
    model: Any,
    dim: int,
    output_shape: tuple[int, ...],
    spec_json: str,
    *,
    method: str = "predict",
    requirements: str = "",
) -> bytes:
    return make_package(
        PICKLE_MODEL.replace("{method}", method),
        requirements=requirements,
        dim=dim,
        output_shape=output_shape,
        spec_json=spec_json,
        files={"model.pkl": pickle.dumps(model)},
    )


def semantic_dict(
    name: str, dim: int, *, task: str = "Regression", out_dim: int = 1
) -> dict[str, Any]:
    return {
        "Data": {"Values": ["Table"], "Type": "Class"},
        "Task": {"Values": [task], "Type": "Class"},
        "Library": {"Values": ["Scikit-learn"], "Type": "Class"},
        "Scenario": {"Values": ["Education"], "Type": "Tag"},
        "License": {"Values": ["MIT"], "Type": "Class"},
        "Description": {"Values": f"A test learnware called {name}.", "Type": "String"},
        "Name": {"Values": name, "Type": "String"},
        "Input": {"Dimension": dim, "Description": {str(i): f"x{i}" for i in range(dim)}},
        "Output": {"Dimension": out_dim, "Description": {str(i): f"y{i}" for i in range(out_dim)}},
    }


def semantic(name: str, dim: int, **kwargs: Any) -> Semantic:
    return Semantic.from_reference_dict(semantic_dict(name, dim, **kwargs))


def semantic_json(name: str, dim: int, **kwargs: Any) -> str:
    return json.dumps(semantic_dict(name, dim, **kwargs))


def spec_json_for(x: np.ndarray, seed: int = 0) -> str:
    return fit_table_rkme(x, reduced_set_size=20, seed=seed).to_reference_json()


# --- a small market: a registry (real PostgreSQL, real check worker) and a reuse service ---


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Market:
    registry: Any  # ServerHandle
    reuse: Any  # ServerHandle
    registry_settings: Any
    reuse_settings: Any
    token: str
    channels: list[Any] = field(default_factory=list)

    def channel(self, address: str) -> Any:
        import grpc

        channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.channels.append(channel)
        return channel

    async def upload(self, data: bytes, semantic_text: str) -> Any:
        from lwdock.registry.v1 import registry_service_pb2_grpc
        from lwdock.uploads import create_learnware_requests

        stub = registry_service_pb2_grpc.RegistryServiceStub(self.channel(self.registry.address))
        return await stub.CreateLearnware(
            create_learnware_requests(data, semantic_json=semantic_text),
            metadata=(("authorization", f"Bearer {self.token}"),),
            timeout=30,
        )

    async def wait_checked(self, name: str, within_s: float = 90.0) -> Any:
        """The learnware once its check finished (ACTIVE or REJECTED)."""
        import asyncio

        from lwdock.common.v1 import learnware_pb2
        from lwdock.registry.v1 import registry_service_pb2, registry_service_pb2_grpc

        stub = registry_service_pb2_grpc.RegistryServiceStub(self.channel(self.registry.address))
        done = (learnware_pb2.LEARNWARE_STATE_ACTIVE, learnware_pb2.LEARNWARE_STATE_REJECTED)
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while True:
            lw = await stub.GetLearnware(
                registry_service_pb2.GetLearnwareRequest(name=name), timeout=10
            )
            if lw.state in done:
                return lw
            assert loop.time() < end, f"{name} still {lw.state} after {within_s} s"
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.registry.stop(self.registry_settings)
        await self.reuse.stop(self.reuse_settings)


async def start_market(home: Path, database_url: str, limits: SandboxLimits = TIGHT) -> Market:
    from lwdock.server.bootstrap import start
    from lwdock.tokens import add_token, new_token
    from registry_service.checks import CheckWorkerOptions
    from registry_service.server import SERVICE_NAME as REGISTRY
    from registry_service.server import build_app as registry_app
    from reuse_service.server import SERVICE_NAME as REUSE
    from reuse_service.server import build_app as reuse_app
    from tests.conftest import service_settings, wait_serving

    tokens_file = home / "tokens.json"
    token = new_token()
    add_token(tokens_file, token, "users/dev", "developer")
    registry_port = _free_port()
    reuse_settings = service_settings(
        home / "reuse-home",
        database_url,
        registry_address=f"127.0.0.1:{registry_port}",
        reuse_max_workers=16,
    )
    reuse = await start(reuse_app(reuse_settings, limits), reuse_settings)
    registry_settings = service_settings(
        home / "registry-home",
        database_url,
        port=registry_port,
        tokens_file=tokens_file,
        blob_dir=home / "blobs",
        reuse_address=reuse.address,
    )
    options = CheckWorkerOptions(
        lease_s=120.0, call_timeout_s=60.0, idle_interval_s=0.05, backoff_initial_s=0.2
    )
    registry = await start(registry_app(registry_settings, check_worker=options), registry_settings)
    market = Market(registry, reuse, registry_settings, reuse_settings, token)
    await wait_serving(market.channel(registry.address), REGISTRY)
    await wait_serving(market.channel(reuse.address), REUSE)
    return market
