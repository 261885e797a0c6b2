"""`python -m search_service`: one server, or with LWDOCK_SEARCH_WORKERS > 1 the supervisor
of that many (search_service.workers). The supervisor imports neither the index nor its
libraries: it only starts and watches processes."""

from __future__ import annotations

import argparse
import sys

from lwdock.server.logs import configure_logging
from lwdock.settings import add_server_arguments, settings_from_args


def main(argv: list[str] | None = None) -> None:
    flags = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="search_service", description=__doc__)
    add_server_arguments(parser)
    parser.add_argument("--registry-address", help="registry to follow (LWDOCK_REGISTRY_ADDRESS)")
    parser.add_argument(
        "--workers",
        dest="search_workers",
        type=int,
        help="processes serving the port, each with its own index (LWDOCK_SEARCH_WORKERS)",
    )
    settings = settings_from_args(parser.parse_args(flags))
    if settings.search_workers < 1:
        parser.error("--workers / LWDOCK_SEARCH_WORKERS must be at least 1")
    if settings.search_threads < 1:
        parser.error("LWDOCK_SEARCH_THREADS must be at least 1")
    if settings.search_workers > 1 and settings.search_worker_index is None:
        from search_service.workers import Supervisor

        configure_logging("search", settings.log_level, settings.log_format)
        sys.exit(Supervisor(settings, flags).run())

    from lwdock.server.bootstrap import run
    from search_service.server import build_app, one_thread_per_search

    one_thread_per_search()
    run(build_app, settings)
