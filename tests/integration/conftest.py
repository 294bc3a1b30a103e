"""Fixtures shared by the tests that act on the real control plane."""

from tests.acting import live, scene  # noqa: F401 (registered as fixtures for this directory)
