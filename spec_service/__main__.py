"""`python -m spec_service [--port N]`: run the spec service alone."""

from spec_service.server import main

main()
