"""PostgreSQL schema of jobsync: names, tables and versioned migrations.

Law: the schema a handle uses is exactly ``MIGRATIONS`` applied in order, and
the version table says how far.  Migrations run in one transaction under a
transaction-level advisory lock keyed by (schema, prefix), so any number of
workers starting at once on an empty database all succeed: the first applies
the migrations, the others wait on the lock, then find nothing to do.

Every identifier comes from a validated schema name and prefix and is quoted
with ``psycopg.sql.Identifier``; every value is a bound parameter.  Nothing
here needs PostgreSQL newer than 12.

Tables (prefix ``sync_`` by default):

- ``site``: per-site constants and counters (generation, change counter,
  plan basis, next incarnation, epoch floor).  Logged, so counters never go
  backwards across a restart.
- ``node``: one row per node name (``name``, ``created_on``,
  ``last_heartbeat`` as timestamptz, so the README's monitoring SQL works;
  ``process``, the registering process's identity, since version 2;
  ``capacity`` and an operator's drain, ``drained_at``, ``drain_until`` (NULL:
  until undrained) and ``drain_note``, since version 3).
  Heartbeats update only ``last_heartbeat`` (no index on it) and the table
  has a low fillfactor, so they are HOT updates.
- ``token``: one row per token (``token_id``, ``node``, incarnation, epoch,
  pending release).
- Since version 5, two indexes that keep a node's reads independent of the
  site's size: ``node_seniority`` (the leader is the first live row in
  seniority order) and ``token_owner`` (a node's tokens by owner).
- ``lock``, ``rebalance`` (history; ``hot``, the tokens a plan measured hot,
  since version 4), ``audit`` (claims and completions; ``cost``, a
  completion's explicit cost, since version 4) and ``schema_version``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from jobsync.core.errors import InvalidArgument, SchemaError

Conn = psycopg.Connection[tuple[Any, ...]]

SCHEMA_VERSION = 5
"""The version this library's code expects."""

MIGRATION_LOCK_TIMEOUT_MS = 2_000
"""How long a migration's DDL may wait for a table lock (the wait for the
migration advisory lock itself is unbounded: concurrent migrators queue on it).
A bounded wait matters because an ALTER TABLE waiting for its lock makes every
later statement on that table (heartbeats) queue behind it; past the bound the
migration rolls back and the caller retries (BackendUnavailable)."""

_SAFE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,40}")

TABLES = ("site", "node", "token", "lock", "rebalance", "audit", "schema_version")


def _identifier(what: str, value: object) -> str:
    if not isinstance(value, str) or not _SAFE_IDENTIFIER.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} is not a safe identifier "
            "(lowercase letter or underscore, then up to 40 of [a-z0-9_])"
        )
    return value


def validate_schema_name(schema: object) -> str:
    """Return ``schema`` if it is a safe identifier, else raise InvalidArgument naming it."""
    return _identifier("schema name", schema)


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a safe identifier prefix, else raise InvalidArgument."""
    return _identifier("table prefix", prefix)


def identifiers(schema: str, prefix: str) -> dict[str, sql.Identifier]:
    """The quoted, schema-qualified name of every table, keyed by its short name."""
    validate_schema_name(schema)
    validate_prefix(prefix)
    return {name: sql.Identifier(schema, prefix + name) for name in TABLES}


def advisory_key(schema: str, prefix: str) -> int:
    """A stable signed 64-bit advisory-lock key for migrating (schema, prefix)."""
    digest = hashlib.blake2b(f"jobsync-migrate\0{schema}\0{prefix}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def channel_name(schema: str, prefix: str, site: str) -> str:
    """The LISTEN/NOTIFY channel of a site: a hash, so any site name yields a safe,
    short (< 63 bytes) identifier, distinct per (schema, prefix, site)."""
    digest = hashlib.blake2b(f"{schema}\0{prefix}\0{site}".encode(), digest_size=12)
    return "jobsync_" + digest.hexdigest()


# -- migrations --------------------------------------------------------------
#
# Each migration is a list of statements with {table} placeholders.  Never
# edit a released migration: append a new one.

_V1 = [
    """CREATE TABLE {site} (
        site text PRIMARY KEY,
        total_tokens integer NOT NULL CHECK (total_tokens > 0),
        hash_function text NOT NULL,
        generation bigint NOT NULL DEFAULT 0,
        change_counter bigint NOT NULL DEFAULT 0,
        plan_basis bigint NOT NULL DEFAULT 0,
        next_incarnation bigint NOT NULL DEFAULT 1,
        epoch_floor bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    ) WITH (fillfactor = 50)""",
    """CREATE TABLE {node} (
        site text NOT NULL,
        name text NOT NULL,
        created_on timestamptz NOT NULL,
        last_heartbeat timestamptz NOT NULL,
        lease_timeout double precision NOT NULL CHECK (lease_timeout > 0),
        incarnation bigint NOT NULL,
        state text NOT NULL CHECK (state IN ('active', 'leaving', 'dead', 'evicted')),
        fence_until timestamptz,
        PRIMARY KEY (site, name)
    ) WITH (fillfactor = 50)""",
    """CREATE UNIQUE INDEX {node_incarnation} ON {node} (site, incarnation)""",
    """CREATE TABLE {token} (
        site text NOT NULL,
        token_id integer NOT NULL CHECK (token_id >= 0),
        node text,
        incarnation bigint,
        epoch bigint NOT NULL DEFAULT 0,
        pending_to text,
        pending_deadline timestamptz,
        PRIMARY KEY (site, token_id)
    ) WITH (fillfactor = 40)""",
    """CREATE INDEX {token_pending} ON {token} (site, pending_deadline)
        WHERE pending_deadline IS NOT NULL""",
    """CREATE TABLE {lock} (
        site text NOT NULL,
        task_key text NOT NULL,
        token_id integer NOT NULL CHECK (token_id >= 0),
        patterns text[] NOT NULL,
        reason text,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz,
        PRIMARY KEY (site, task_key)
    )""",
    """CREATE TABLE {rebalance} (
        site text NOT NULL,
        generation bigint NOT NULL,
        leader text NOT NULL,
        at timestamptz NOT NULL,
        trigger text NOT NULL,
        nodes_before text[] NOT NULL,
        nodes_after text[] NOT NULL,
        moved integer NOT NULL,
        unowned integer NOT NULL,
        duration_ms double precision NOT NULL,
        PRIMARY KEY (site, generation)
    )""",
    """CREATE INDEX {rebalance_at} ON {rebalance} (site, at)""",
    """CREATE TABLE {audit} (
        site text NOT NULL,
        date date NOT NULL,
        task_key text NOT NULL,
        node text NOT NULL,
        incarnation bigint NOT NULL,
        token_id integer NOT NULL,
        epoch bigint NOT NULL,
        status text NOT NULL CHECK (status IN ('claimed', 'done')),
        claimed_at timestamptz NOT NULL,
        completed_at timestamptz,
        PRIMARY KEY (site, date, task_key)
    )""",
    """CREATE INDEX {audit_open} ON {audit} (site, incarnation) WHERE status = 'claimed'""",
    """CREATE INDEX {audit_done} ON {audit} (site, completed_at) WHERE status = 'done'""",
]

# Adding a column with a constant default rewrites nothing (PostgreSQL >= 11).
_V2 = [
    """ALTER TABLE {node} ADD COLUMN process text NOT NULL DEFAULT ''""",
]

_V3 = [
    """ALTER TABLE {node} ADD COLUMN capacity double precision NOT NULL DEFAULT 1
        CHECK (capacity > 0)""",
    """ALTER TABLE {node} ADD COLUMN drained_at timestamptz""",
    """ALTER TABLE {node} ADD COLUMN drain_until timestamptz""",
    """ALTER TABLE {node} ADD COLUMN drain_note text NOT NULL DEFAULT ''""",
]

_V4 = [
    """ALTER TABLE {audit} ADD COLUMN cost double precision CHECK (cost > 0)""",
    """ALTER TABLE {rebalance} ADD COLUMN hot integer[]""",
]

# A node's reads by key instead of by scan (``glance``, ``read_owned``): the
# leader as the first live row in seniority order, a node's tokens by owner.
_V5 = [
    """CREATE INDEX {node_seniority} ON {node} (site, created_on, name COLLATE "C")""",
    """CREATE INDEX {token_owner} ON {token} (site, node, incarnation)""",
]

MIGRATIONS: tuple[tuple[int, str, list[str]], ...] = (
    (1, "sites, nodes, tokens, locks, history, audit", _V1),
    (2, "node process identity", _V2),
    (3, "node capacity and drain", _V3),
    (4, "completion cost and hot tokens", _V4),
    (5, "seniority and owner indexes", _V5),
)

_INDEXES = (
    "node_incarnation",
    "token_pending",
    "rebalance_at",
    "audit_open",
    "audit_done",
    "node_seniority",
    "token_owner",
)


def _format(template: str, schema: str, prefix: str) -> sql.Composed:
    names: dict[str, sql.Composable] = dict(identifiers(schema, prefix))
    # Index names are unqualified (an index lives in its table's schema).
    names.update({name: sql.Identifier(prefix + name) for name in _INDEXES})
    names["schema"] = sql.Identifier(schema)
    return sql.SQL(template).format(**names)


Counter = Callable[[], None]
Upgrade = Callable[[Conn, str, str], "Callable[[], None] | None"]
"""A step run, with (conn, schema, prefix), inside the migrations' transaction
under their advisory lock, before the tables are created; what it returns (if
anything) runs after they are (``original.take_over``: the original jobsync's
tables moved aside, then carried over)."""


def _nothing() -> None:
    return None


def installed_version(conn: Conn, schema: str, prefix: str, count: Counter = _nothing) -> int:
    """The schema version recorded in the database; 0 if the version table is missing."""
    table = f'"{schema}"."{prefix}schema_version"'
    count()
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if row is None or not row[0]:
        return 0
    count()
    query = _format("SELECT coalesce(max(version), 0) FROM {schema_version}", schema, prefix)
    row = conn.execute(query).fetchone()
    return 0 if row is None else int(row[0])


def apply_migrations(
    conn: Conn,
    schema: str,
    prefix: str,
    count: Counter = _nothing,
    upgrade: Upgrade | None = None,
) -> Mapping[str, int]:
    """Bring (schema, prefix) to SCHEMA_VERSION on an autocommit connection.

    Returns ``{"from": version_before, "to": version_after}``, "before" as found
    under the lock (so of concurrent callers, one reports the upgrade).  Raises
    SchemaError if the database holds a newer version than this library knows.
    ``count`` is called once per statement sent; ``upgrade`` (see ``Upgrade``)
    runs only when there is something to create.
    """
    validate_schema_name(schema)
    validate_prefix(prefix)
    before = installed_version(conn, schema, prefix, count)
    if before == SCHEMA_VERSION:
        return {"from": before, "to": before}
    _refuse_newer(before, schema, prefix)

    def run(query: sql.Composed | str, params: tuple[object, ...] | None = None) -> Any:
        count()
        return conn.execute(query if isinstance(query, sql.Composed) else query.encode(), params)

    run("BEGIN")
    try:
        # The handle's own session lock_timeout would cut the queue of concurrent
        # migrators short: wait for the advisory lock as long as it takes, then
        # bound the DDL's table-lock waits (see MIGRATION_LOCK_TIMEOUT_MS).
        run("SET LOCAL lock_timeout = 0")
        run("SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema, prefix),))
        run(f"SET LOCAL lock_timeout = {MIGRATION_LOCK_TIMEOUT_MS}")
        carry = None if upgrade is None else upgrade(conn, schema, prefix)
        exists = run("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,))
        if exists.fetchone() is None:
            run(_format("CREATE SCHEMA {schema}", schema, prefix))
        run(
            _format(
                """CREATE TABLE IF NOT EXISTS {schema_version} (
                    version integer PRIMARY KEY,
                    description text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
                schema,
                prefix,
            )
        )
        current = installed_version(conn, schema, prefix, count)
        _refuse_newer(current, schema, prefix)
        insert = _format(
            "INSERT INTO {schema_version} (version, description) VALUES (%s, %s)", schema, prefix
        )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                run(_format(statement, schema, prefix))
            run(insert, (version, description))
        if carry is not None:
            carry()
    except BaseException:
        if not conn.closed and not conn.broken:
            run("ROLLBACK")
        raise
    run("COMMIT")
    return {"from": current, "to": SCHEMA_VERSION}


def check_version(conn: Conn, schema: str, prefix: str, count: Counter = _nothing) -> None:
    """Raise SchemaError unless (schema, prefix) is at exactly SCHEMA_VERSION."""
    version = installed_version(conn, schema, prefix, count)
    _refuse_newer(version, schema, prefix)
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"jobsync schema {schema!r} (prefix {prefix!r}) is at version {version}, "
            f"this library needs {SCHEMA_VERSION}: run `python -m jobsync migrate`, "
            "or start a worker (a Job), which upgrades it"
        )


def _refuse_newer(version: int, schema: str, prefix: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"jobsync schema {schema!r} (prefix {prefix!r}) is at version {version}, "
            f"newer than this library's {SCHEMA_VERSION}: upgrade jobsync"
        )
