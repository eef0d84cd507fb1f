"""Entry point for ``python -m lsq_sync``."""

from lsq_sync.cli import main

main()
