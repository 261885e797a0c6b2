"""The `lwdock` command line.

`up` (the suite) and `token create` are here; the user commands (spec fit, pack, submit,
status, search, download, reuse) are in lwdock.client.commands and `demo` in lwdock.demo.
Exit codes and the `--json` contract: docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from pathlib import Path

from lwdock.settings import DEFAULT_PORTS, Settings


def _up(args: argparse.Namespace) -> int:
    from lwdock.suite import SuiteOptions, run_suite

    settings = Settings()
    ports = {name: getattr(args, f"{name}_port") or port for name, port in DEFAULT_PORTS.items()}
    return run_suite(
        SuiteOptions(
            home=args.home or settings.home,
            host=args.host or settings.host,
            ports=ports,
            database_url=args.database_url or settings.database_url,
        )
    )


def _token_create(args: argparse.Namespace) -> int:
    """With the CLI's error contract (docs/cli.md): an error goes to stderr and, with --json,
    as the `{"error": {...}}` object on the last stdout line."""
    from lwdock.client.commands import EXIT_USAGE, handles_errors, report_error
    from lwdock.errors import InvalidArgument

    url = args.database_url or Settings().database_url
    if not url:
        return report_error(
            args,
            InvalidArgument.for_field(
                "--database-url", "no database: pass --database-url or set LWDOCK_DATABASE_URL"
            ),
            exit_code=EXIT_USAGE,
        )
    return handles_errors(functools.partial(_create_token, url=url))(args)


def _create_token(args: argparse.Namespace, *, url: str) -> int:
    from registry_service.auth import create_token_in_database

    row, secret = asyncio.run(
        create_token_in_database(url, args.principal, args.role, args.display_name)
    )
    role = row.role.value.lower()
    if args.json:
        print(
            json.dumps(
                {"name": row.name, "principal": row.principal, "role": role, "secret": secret}
            )
        )
    else:
        print(f"created {row.name} for {row.principal} (role {role}); the secret, shown once:")
        print(secret)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lwdock", description="learnware-dock command line")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole suite locally (Ctrl-C stops it)")
    up.add_argument("--home", type=Path, help="state directory (LWDOCK_HOME, ~/.lwdock)")
    up.add_argument("--host", help="address the services bind (127.0.0.1)")
    up.add_argument("--database-url", help="use this PostgreSQL instead of the embedded one")
    for name, port in DEFAULT_PORTS.items():
        up.add_argument(f"--{name}-port", type=int, help=f"{name} service port ({port})")
    up.set_defaults(handler=_up)

    token = commands.add_parser("token", help="manage registry tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create",
        help="create a token directly in the registry database (e.g. the first admin's)",
        description="Migrates the database if needed, stores the token's sha256 and prints "
        "the secret once.",
    )
    create.add_argument("--principal", required=True, help="who it stands for: users/alice")
    create.add_argument(
        "--role",
        required=True,
        type=str.lower,
        choices=("reader", "developer", "admin"),
        help="the token's role",
    )
    create.add_argument("--display-name", default="", help="a label for the token")
    create.add_argument("--database-url", help="PostgreSQL DSN (LWDOCK_DATABASE_URL)")
    create.add_argument(
        "--json", action="store_true", help='print {"name","principal","role","secret"}'
    )
    create.set_defaults(handler=_token_create, command="token create")

    from lwdock.client.commands import add_commands
    from lwdock.demo import add_demo_command

    add_commands(commands)
    add_demo_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
