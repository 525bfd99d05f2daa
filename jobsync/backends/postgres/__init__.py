"""The PostgreSQL backend: the production implementation of base.py's ``Backend``.

Modules, each named for what it holds:

- ``backend``: ``PostgresBackend`` and ``migrate``, and how PostgreSQL keeps
  base.py's contract (round trips, clock, isolation, lock waits, the
  heartbeat-versus-reap race);
- ``handle``: the plumbing every verb shares; ``membership``, ``planning``,
  ``claims`` and ``operations``: the verbs;
- ``session``: the one connection a handle shares between two threads, with
  ``connect`` (opening it: options, settings, backoff, pooler detection) and
  ``notify`` (LISTEN and the waiter's wake-up);
- ``queries``: the macros and rendering, and the rules each statement
  mirrors; the SQL itself, one template per statement, in
  ``member_queries`` (registration, heartbeats, leaving, glance),
  ``plan_queries`` (the cluster read and the plan's writes),
  ``settle_queries`` (hand-offs, claims, settlement, reaps) and
  ``plain_queries`` (the rest, which embodies no rule);
- ``schema``: tables, names and versioned migrations;
- ``rows``: rows to base.py values, plans to parameters;
- ``original``: the original jobsync's tables: found, refused, handed over,
  carried over.

psycopg is imported by these modules only; ``import jobsync`` never imports
this package.
"""

from jobsync.backends.postgres.backend import PostgresBackend, migrate

__all__ = ["PostgresBackend", "migrate"]
