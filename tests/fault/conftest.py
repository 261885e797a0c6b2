"""Fixtures of the fault tests."""

from tests.fault.search_world import world

__all__ = ["world"]
