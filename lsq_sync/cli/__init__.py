"""The command line: the click group and its commands (commands.py), over the core; text
for people in render.py."""

from lsq_sync.cli.commands import cli, main

__all__ = ["cli", "main"]
