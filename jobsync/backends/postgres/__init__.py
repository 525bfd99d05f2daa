"""The PostgreSQL backend: the production implementation of base.py's ``Backend``.

Modules, each named for what it holds:

- ``backend``: ``PostgresBackend`` and ``migrate``, and how PostgreSQL keeps
  base.py's contract (round trips, clock, isolation, lock waits, the
  heartbeat-versus-reap race);
- ``session``: the one connection a handle shares between two threads;
- ``queries``: the SQL, one template per statement;
- ``schema``: tables, names and versioned migrations;
- ``rows``: rows to base.py values, plans to parameters.

psycopg is imported by these modules only; ``import jobsync`` never imports
this package.
"""

from jobsync.backends.postgres.backend import PostgresBackend, migrate

__all__ = ["PostgresBackend", "migrate"]
