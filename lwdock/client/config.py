"""Where the services are and who the client is.

Addresses default to the suite's (`LWDOCK_{SPEC,REGISTRY,SEARCH,REUSE}_ADDRESS`, else
127.0.0.1:5005x). The token is, in order: the one passed, `LWDOCK_TOKEN`, or the local admin
token `lwdock up` writes to `$LWDOCK_HOME/admin.token` (so a newcomer on the machine that runs
the suite needs no flag). None of these, or an explicit empty token, means anonymous calls
(reads only, where the suite allows them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lwdock.settings import Settings

TOKEN_ENV = "LWDOCK_TOKEN"
ADMIN_TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class Endpoints:
    spec: str
    registry: str
    search: str
    reuse: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: str | None) -> Endpoints:
        """The suite's addresses from the environment; keyword overrides win when not None."""
        s = settings or Settings()
        values = {
            "spec": s.spec_address,
            "registry": s.registry_address,
            "search": s.search_address,
            "reuse": s.reuse_address,
        }
        values.update({k: v for k, v in overrides.items() if v})
        return cls(**values)

    def as_dict(self) -> dict[str, str]:
        return {
            "spec": self.spec,
            "registry": self.registry,
            "search": self.search,
            "reuse": self.reuse,
        }


def resolve_token(token: str | None = None, home: Path | None = None) -> str | None:
    """The explicit token, else LWDOCK_TOKEN, else `<LWDOCK_HOME>/admin.token` when readable.
    An explicit empty string means anonymous (no token at all)."""
    if token is not None:
        return token.strip() or None
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    path = (home or Settings().home).expanduser() / ADMIN_TOKEN_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None
