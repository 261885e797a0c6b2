"""Local token files: sha256 hashes of bearer tokens and the principal each stands for.

The server side reads them through `lwdock.server.interceptors.TokenStore`. The suite writes a
local admin token at first start (`LWDOCK_HOME/admin.token`, mode 0600) so a newcomer's CLI
authenticates without flags; no default secret ever ships with the code.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

TOKEN_PREFIX = "lwd_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def add_token(tokens_file: Path, token: str, principal: str, role: str) -> None:
    entries = json.loads(tokens_file.read_text()) if tokens_file.exists() else {}
    entries[hash_token(token)] = {"principal": principal, "role": role}
    _write_private(tokens_file, json.dumps(entries, indent=1, sort_keys=True))


def ensure_admin_token(home: Path) -> tuple[Path, Path]:
    """(tokens_file, admin_token_file) under `home`, creating the admin token once."""
    tokens_file = home / "tokens.json"
    admin_file = home / "admin.token"
    if not admin_file.exists():
        token = new_token()
        add_token(tokens_file, token, "users/admin", "admin")
        _write_private(admin_file, token + "\n")
    return tokens_file, admin_file
