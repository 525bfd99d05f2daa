"""SQLite backend: processes on one host coordinate through one database file.

``SQLiteBackend`` is the handle (``backend``); ``MAX_POLL_INTERVAL`` bounds its
``poll_interval``.  The package's modules are named for what they hold; see
``backend``'s docstring for the map.
"""

from __future__ import annotations

from jobsync.backends.sqlite.backend import SQLiteBackend
from jobsync.backends.sqlite.session import MAX_POLL_INTERVAL

__all__ = ["MAX_POLL_INTERVAL", "SQLiteBackend"]
