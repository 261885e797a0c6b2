"""`python -m registry_service [--port N]`: run the registry service alone."""

from registry_service.server import main

main()
