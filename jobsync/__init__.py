"""jobsync: coordinate worker processes so every task is owned by exactly one live worker."""

from jobsync import errors
from jobsync.core import match_pattern, token_for
from jobsync.core.errors import JobSyncError

__version__ = "0.1.0"

__all__ = ["JobSyncError", "__version__", "errors", "match_pattern", "token_for"]
