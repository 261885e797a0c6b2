"""`python -m reuse_service [--port N]`: run the reuse service alone."""

from reuse_service.server import main

main()
