"""Registry tokens in PostgreSQL: CreateToken secrets authenticate calls, DeleteToken revokes
them within the verifier's cache TTL, and `lwdock token create` bootstraps the first admin.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lwdock.embedded_db import scratch_database
from lwdock.errors import Unavailable
from lwdock.registry.v1 import registry_service_pb2 as pb
from lwdock.registry.v1 import registry_service_pb2_grpc, resources_pb2
from lwdock.server.bootstrap import ServerHandle, start
from lwdock.server.context import Principal
from lwdock.server.interceptors import CompositeTokenVerifier, TokenStore
from lwdock.tokens import add_token, hash_token, new_token
from registry_service.auth import DatabaseTokenVerifier
from registry_service.repository import Role, TokenRow
from registry_service.server import SERVICE_NAME, build_app
from tests.conftest import service_settings, venv_bin, wait_serving
from tests.test_registry_service import ZIP, rezip, upload_requests

TTL_S = 0.2


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


@pytest.fixture
def fresh_db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "lwdock_tk") as url:
        yield url


@dataclass
class Running:
    handle: ServerHandle
    stub: registry_service_pb2_grpc.RegistryServiceStub
    health: health_pb2_grpc.HealthStub


@asynccontextmanager
async def registry_on(
    url: str, home: Path, tokens_file: Path, *, until_serving: bool = True
) -> AsyncIterator[Running]:
    settings = service_settings(home, url, tokens_file=tokens_file, blob_dir=home / "blobs")
    handle = await start(build_app(settings, token_cache_ttl_s=TTL_S), settings)
    channel = grpc.aio.insecure_channel(handle.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        if until_serving:
            await wait_serving(channel, SERVICE_NAME)
        yield Running(handle, registry_service_pb2_grpc.RegistryServiceStub(channel), health)
    finally:
        await channel.close()
        await handle.stop(settings)


async def test_created_token_authenticates_until_revoked(fresh_db: str, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    admin = new_token()
    add_token(tokens_file, admin, "users/admin", "admin")
    async with registry_on(fresh_db, tmp_path, tokens_file) as reg:
        reply = await reg.stub.CreateToken(
            pb.CreateTokenRequest(
                principal="users/carol", role=resources_pb2.ROLE_DEVELOPER, display_name="ci"
            ),
            metadata=bearer(admin),
        )
        carol = bearer(reply.secret)

        created = await reg.stub.CreateLearnware(
            upload_requests(rezip(ZIP, b"carol")),  # type: ignore[arg-type]
            metadata=carol,
        )
        assert created.owner == "users/carol"
        own = await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=carol)
        assert [t.name for t in own.tokens] == [reply.token.name]
        # A developer token is not an admin token.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.CreateToken(
                pb.CreateTokenRequest(principal="users/eve", role=resources_pb2.ROLE_ADMIN),
                metadata=carol,
            )
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # Unknown secrets of our shape, and other garbage, are UNAUTHENTICATED.
        for secret in (new_token(), "not-a-token"):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(secret))
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED

        await reg.stub.DeleteToken(
            pb.DeleteTokenRequest(name=reply.token.name), metadata=bearer(admin)
        )
        await asyncio.sleep(TTL_S * 2)  # the verifier's cache expires
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.CreateLearnware(
                upload_requests(rezip(ZIP, b"carol-revoked")),  # type: ignore[arg-type]
                metadata=carol,
            )
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=carol)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The file's admin token still works.
        await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(admin))


async def test_unreachable_database_makes_unknown_tokens_unavailable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=1"
    tokens_file = tmp_path / "tokens.json"
    admin = new_token()
    add_token(tokens_file, admin, "users/admin", "admin")
    async with registry_on(url, tmp_path, tokens_file, until_serving=False) as reg:
        # The database cannot say whether this token is valid: retryable, not UNAUTHENTICATED.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(new_token()))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        # Health stays open whatever the token.
        reply = await reg.health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), metadata=bearer(new_token())
        )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # File tokens are checked first: the call gets past auth (then UNAVAILABLE: no DB).
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(admin))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in (exc.value.details() or "")


# ---------------------------------------------------------------------------------------------
# DatabaseTokenVerifier: cache and errors, without a database


class FakeRepository:
    def __init__(self) -> None:
        self.rows: dict[str, TokenRow] = {}
        self.calls = 0
        self.down = False

    async def find_token_by_sha256(self, sha: str, *, active_only: bool = True) -> TokenRow | None:
        self.calls += 1
        if self.down:
            raise Unavailable("the registry database is unavailable")
        return self.rows.get(sha)


def token_row(secret: str, principal: str, role: Role) -> TokenRow:
    from datetime import UTC, datetime

    return TokenRow(
        id="tk-00000001",
        principal=principal,
        role=role,
        token_sha256=hash_token(secret),
        display_name="",
        create_time=datetime.now(UTC),
        expire_time=None,
        revoked=False,
        revoke_time=None,
    )


async def test_database_verifier_caches_within_ttl() -> None:
    now = [100.0]
    repo = FakeRepository()
    verifier = DatabaseTokenVerifier(lambda: repo, ttl_s=10.0, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    secret = new_token()
    repo.rows[hash_token(secret)] = token_row(secret, "users/dave", Role.DEVELOPER)

    assert await verifier.verify(secret) == Principal("users/dave", "developer")
    assert await verifier.verify(secret) == Principal("users/dave", "developer")
    assert repo.calls == 1
    del repo.rows[hash_token(secret)]  # revoked: still cached until the TTL passes
    now[0] += 9.0
    assert await verifier.verify(secret) is not None
    now[0] += 2.0
    assert await verifier.verify(secret) is None
    assert repo.calls == 2
    assert await verifier.verify("not-ours") is None  # no query for foreign tokens
    assert repo.calls == 2

    repo.down = True
    with pytest.raises(Unavailable):
        await verifier.verify(new_token())


async def test_composite_asks_the_file_first(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    secret = new_token()
    add_token(tokens_file, secret, "users/admin", "admin")
    repo = FakeRepository()
    repo.down = True
    composite = CompositeTokenVerifier(
        TokenStore(tokens_file),
        DatabaseTokenVerifier(lambda: repo),  # type: ignore[arg-type,return-value]
    )
    assert await composite.verify(secret) == Principal("users/admin", "admin")
    assert repo.calls == 0
    with pytest.raises(Unavailable):
        await composite.verify(new_token())


# ---------------------------------------------------------------------------------------------
# lwdock token create


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_bin("lwdock"), "token", "create", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_cli_token_create_bootstraps_an_admin(fresh_db: str, tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        run_cli,
        "--principal",
        "users/root",
        "--role",
        "admin",
        "--database-url",
        fresh_db,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"name", "principal", "role", "secret"}
    assert printed["principal"] == "users/root" and printed["role"] == "admin"
    assert printed["name"].startswith("tokens/") and printed["secret"].startswith("lwd_")

    # Plain output, database from LWDOCK_DATABASE_URL: the secret on its own last line.
    plain = await asyncio.to_thread(
        run_cli,
        "--principal",
        "users/dev",
        "--role",
        "developer",
        env={"LWDOCK_DATABASE_URL": fresh_db},
    )
    assert plain.returncode == 0, plain.stderr
    dev_secret = plain.stdout.strip().splitlines()[-1]
    assert dev_secret.startswith("lwd_") and dev_secret != printed["secret"]

    empty = tmp_path / "tokens.json"  # no file tokens at all: only the database's
    async with registry_on(fresh_db, tmp_path, empty) as reg:
        reply = await reg.stub.CreateToken(
            pb.CreateTokenRequest(principal="users/erin", role=resources_pb2.ROLE_READER),
            metadata=bearer(printed["secret"]),
        )
        assert reply.token.principal == "users/erin"
        listed = await reg.stub.ListTokens(
            pb.ListTokensRequest(), metadata=bearer(printed["secret"])
        )
        assert {t.principal for t in listed.tokens} == {"users/root", "users/dev", "users/erin"}
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await reg.stub.CreateToken(
                pb.CreateTokenRequest(principal="users/x", role=resources_pb2.ROLE_READER),
                metadata=bearer(dev_secret),
            )
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_cli_token_create_needs_a_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LWDOCK_DATABASE_URL"}
    result = subprocess.run(
        [venv_bin("lwdock"), "token", "create", "--principal", "users/a", "--role", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,  # no .env here
        check=False,
    )
    assert result.returncode == 2
    assert "LWDOCK_DATABASE_URL" in result.stderr
    assert result.stdout == ""
