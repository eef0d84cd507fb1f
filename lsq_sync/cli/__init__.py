"""The command line: the click group and its commands (commands.py), over the core; text
for people in render.py."""

import gc

# A run is short and allocates its imports' objects in one burst: the default threshold
# (700) collects dozens of times while they load, 15 ms of CPU for a cron run that finds
# nothing to do. Collections still happen, just less often; the Python API is unaffected.
gc.set_threshold(10_000, 10, 10)

from lsq_sync.cli.commands import cli, main  # noqa: E402

__all__ = ["cli", "main"]
