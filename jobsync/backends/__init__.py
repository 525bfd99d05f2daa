"""Storage backends: one Protocol of domain verbs (``base``) and three implementations.

``memory`` (tests, simulation), ``sqlite`` (one machine, no server) and
``postgres`` (production).  Implementations are imported lazily so that the
PostgreSQL driver is loaded only when a PostgreSQL backend is opened.
"""

from jobsync.backends.base import Backend

__all__ = ["Backend"]
