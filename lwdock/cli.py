"""The `lwdock` command line."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
