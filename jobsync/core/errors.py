"""The one error tree of jobsync.

Every error the library raises on purpose is a ``JobSyncError``::

    JobSyncError
    +-- InvalidArgument (also ValueError)      bad input at the call that gave it
    |   +-- InvalidTokenCount                  total_tokens not a positive int
    |   +-- InvalidHashFunction                unknown hash name
    |   +-- InvalidPattern                     not a LIKE pattern we accept
    |   +-- InvalidNodeName                    node name not a usable string
    |   +-- DuplicateNodeName                  one name twice in one call
    |   +-- InvalidLock                        lock on a token out of range, ...
    |   +-- InvalidTaskId                      task id that cannot be canonicalised
    +-- ConfigError (also ValueError)          configuration that cannot work
    |   +-- ConfigMismatch                     differs from the site's stored constants
    |   +-- InvalidURL (also InvalidArgument)  a backend URL that cannot be parsed
    +-- BackendError                           the storage layer failed
    |   +-- BackendUnavailable                 transient: retried with backoff
    |   |   +-- LockTimeout                    a row stayed locked past the lock timeout
    |   |   +-- HandoverPending                original jobsync workers are still live
    |   +-- SchemaError                        the database schema is not what we need
    |       +-- OriginalSchemaFound            the original jobsync's tables are in the way
    +-- ConflictError                          an optimistic write lost its race
    +-- NodeNameConflict                       a newer incarnation took this node's name
    +-- IllegalTransition                      a lifecycle event not allowed in a state
    +-- NotLeader                              a leader-only verb from a non-leader

Driver errors never escape a backend: they are raised as one of these,
``from`` the original (errors are translated at the boundary).  This module is re-exported as
``jobsync.errors``.
"""

from __future__ import annotations


class JobSyncError(Exception):
    """Base class of every error jobsync raises on purpose."""


class InvalidArgument(JobSyncError, ValueError):
    """A public entry point was given a value it cannot use; nothing changed."""


class InvalidTokenCount(InvalidArgument):
    """``total_tokens`` is not a positive integer."""


class InvalidHashFunction(InvalidArgument):
    """The hash function name is not one jobsync knows."""


class InvalidPattern(InvalidArgument):
    """A node pattern is not a string or is not a valid LIKE pattern."""


class InvalidNodeName(InvalidArgument):
    """A node name is not a non-empty string."""


class DuplicateNodeName(InvalidArgument):
    """The same node name appears twice where names must be distinct."""


class InvalidLock(InvalidArgument):
    """A lock names a token out of range or carries no usable patterns."""


class InvalidTaskId(InvalidArgument):
    """A task id cannot be turned into its canonical string."""


class ConfigError(JobSyncError, ValueError):
    """The configuration cannot work (for example timeout < 2 * interval + margin)."""


class ConfigMismatch(ConfigError):
    """A Job's total_tokens or hash function differ from the site's stored ones."""


class InvalidURL(ConfigError, InvalidArgument):
    """A backend URL (or libpq connection string) that cannot be parsed or has an
    unknown option; both a ``ConfigError`` and an ``InvalidArgument``."""


class BackendError(JobSyncError):
    """The storage layer failed in a way that is not the caller's input."""


class BackendUnavailable(BackendError):
    """Transient: the backend could not be reached or was busy.  Retried with backoff."""


class LockTimeout(BackendUnavailable):
    """A row the verb needs stayed locked by another transaction past the lock timeout.

    Transient like any ``BackendUnavailable``.  The usual holder is a user's
    own open transaction that completed or released a task with
    ``connection=``: jobsync never waits on such a transaction for longer
    than the lock timeout, so that no user transaction can hang a worker.
    """


class SchemaError(BackendError):
    """The database schema is missing, newer than this library, or damaged."""


class OriginalSchemaFound(SchemaError):
    """The database holds the original jobsync's tables (PyPI ``jobsync`` 1.x) where
    this library's would go; the message names the command that upgrades it."""


class HandoverPending(BackendUnavailable):
    """An upgrade from the original jobsync is armed and original workers still
    heartbeat: new workers claim nothing until the last one stops or times out."""


class ConflictError(JobSyncError):
    """An optimistic compare-and-set lost: what it read changed before it wrote."""


class NodeNameConflict(JobSyncError):
    """A newer incarnation of this node's name took its row over; this one stops."""


class IllegalTransition(JobSyncError):
    """A lifecycle event arrived in a state whose table does not allow it."""


class NotLeader(JobSyncError):
    """A leader-only write came from a node that is not the oldest live node."""


__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "ConfigMismatch",
    "ConflictError",
    "DuplicateNodeName",
    "HandoverPending",
    "IllegalTransition",
    "InvalidArgument",
    "InvalidHashFunction",
    "InvalidLock",
    "InvalidNodeName",
    "InvalidPattern",
    "InvalidTaskId",
    "InvalidTokenCount",
    "InvalidURL",
    "JobSyncError",
    "LockTimeout",
    "NodeNameConflict",
    "NotLeader",
    "OriginalSchemaFound",
    "SchemaError",
]
