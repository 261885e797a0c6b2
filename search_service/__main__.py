"""`python -m search_service [--port N] [--workers N]`: run the search service alone."""

from search_service.cli import main

main()
