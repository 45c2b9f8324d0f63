"""The `retro` command line (an entry point: it may start flows and run stages)."""

from components.cli.app import app, main

__all__ = ["app", "main"]
