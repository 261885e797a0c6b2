"""`python -m search_service [--port N]`: run the search service alone."""

from search_service.server import main

main()
