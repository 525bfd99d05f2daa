"""The ``jobsync`` command line: ``main(argv) -> exit code``.  See ``jobsync.cli.main``."""

from jobsync.cli.main import main

__all__ = ["main"]
