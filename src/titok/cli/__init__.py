"""The ``titok`` command line."""

from titok.cli.app import app, main

__all__ = ["app", "main"]
