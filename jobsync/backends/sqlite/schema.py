"""The SQLite backend's schema: DDL, versions, migrations, and opening a file.

Law: the schema a handle uses is ``DDL`` (version 1) followed by every
``MIGRATIONS`` step in order, and ``sync_schema`` says how far.  Creation and
upgrade are safe when many processes open one file at once: they run in one
``BEGIN IMMEDIATE`` transaction (one writer at a time, each waiting up to the
busy timeout) that re-reads the version under the write lock, so the first
process creates or upgrades the file and the others find nothing to do.  A
file an older library wrote upgrades in place; a file a newer library wrote
is refused (SchemaError).  A file already at this version is only read (no
write lock on open).

Times are REAL seconds on the host's clock; claim dates are ISO ``YYYY-MM-DD``
text; pattern and node lists are JSON arrays.  ``sync_node`` and
``sync_token`` carry the monitoring names of docs/PROTOCOL.md section 6 (``name,
created_on, last_heartbeat``; ``token_id, node``).  ``sync_site.signal``
counts every change-counter bump and plan-basis update: the one value
``wait_for_change`` polls.  ``sync_site.epoch_floor`` is the epoch new token
rows start at, so epochs never go backwards across ``reset_site``.
``sync_node.process`` (version 2) is the registering process's identity;
``capacity`` and an operator's drain (``drained_at``, ``drain_until``,
``drain_note``) are version 3; a completion's explicit cost
(``sync_audit.cost``) and the hot tokens a plan measured (``sync_history.hot``,
a JSON array) are version 4.

The ``*_COLUMNS`` lists are the column orders every statement (``queries``)
selects and every row conversion (``rows``) reads.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

from sqlite_utils import Database

from jobsync.core.errors import SchemaError

SCHEMA_VERSION = 4
"""The version this library's code expects: ``DDL`` plus every migration up to it."""
MIN_SQLITE = (3, 24, 0)

DDL = (  # version 1; never edit it: append a migration instead
    "CREATE TABLE IF NOT EXISTS sync_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sync_site (
        site TEXT PRIMARY KEY, total_tokens INTEGER NOT NULL, hash_function TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0, change_counter INTEGER NOT NULL DEFAULT 0,
        plan_basis INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
        signal INTEGER NOT NULL DEFAULT 0, incarnation_seq INTEGER NOT NULL DEFAULT 0,
        epoch_floor INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS sync_node (
        site TEXT NOT NULL, name TEXT NOT NULL, incarnation INTEGER NOT NULL,
        created_on REAL NOT NULL, last_heartbeat REAL NOT NULL, lease_timeout REAL NOT NULL,
        state TEXT NOT NULL, fence_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (site, name)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS sync_token (
        site TEXT NOT NULL, token_id INTEGER NOT NULL, node TEXT, incarnation INTEGER,
        epoch INTEGER NOT NULL, pending_to TEXT, pending_deadline REAL,
        PRIMARY KEY (site, token_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS sync_token_holder ON sync_token (site, incarnation)",
    "CREATE INDEX IF NOT EXISTS sync_token_pending ON sync_token (site)"
    " WHERE pending_deadline IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS sync_lock (
        site TEXT NOT NULL, task_key TEXT NOT NULL, token INTEGER NOT NULL,
        patterns TEXT NOT NULL, reason TEXT, created_by TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL, PRIMARY KEY (site, task_key))""",
    """CREATE TABLE IF NOT EXISTS sync_history (
        id INTEGER PRIMARY KEY, site TEXT NOT NULL, generation INTEGER NOT NULL,
        leader TEXT NOT NULL, at REAL NOT NULL, trigger TEXT NOT NULL,
        nodes_before TEXT NOT NULL, nodes_after TEXT NOT NULL, moved INTEGER NOT NULL,
        unowned INTEGER NOT NULL, duration_ms REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sync_history_site ON sync_history (site, id)",
    """CREATE TABLE IF NOT EXISTS sync_audit (
        site TEXT NOT NULL, date TEXT NOT NULL, task_key TEXT NOT NULL, node TEXT NOT NULL,
        incarnation INTEGER NOT NULL, token INTEGER NOT NULL, epoch INTEGER NOT NULL,
        status TEXT NOT NULL, claimed_at REAL NOT NULL, completed_at REAL,
        UNIQUE (site, date, task_key))""",
    "CREATE INDEX IF NOT EXISTS sync_audit_open ON sync_audit (site, incarnation)"
    " WHERE status = 'claimed'",
    "CREATE INDEX IF NOT EXISTS sync_audit_done ON sync_audit (site, completed_at)",
)

MIGRATIONS: Mapping[int, tuple[str, ...]] = {
    # version -> the statements that take a file from version - 1 to it
    2: ("ALTER TABLE sync_node ADD COLUMN process TEXT NOT NULL DEFAULT ''",),
    3: (
        "ALTER TABLE sync_node ADD COLUMN capacity REAL NOT NULL DEFAULT 1",
        "ALTER TABLE sync_node ADD COLUMN drained_at REAL",
        "ALTER TABLE sync_node ADD COLUMN drain_until REAL",
        "ALTER TABLE sync_node ADD COLUMN drain_note TEXT NOT NULL DEFAULT ''",
    ),
    4: (
        "ALTER TABLE sync_audit ADD COLUMN cost REAL",
        "ALTER TABLE sync_history ADD COLUMN hot TEXT",
    ),
}

SITE_COLUMNS = (
    "site, total_tokens, hash_function, generation, change_counter, plan_basis, created_at,"
    " signal, incarnation_seq, epoch_floor"
)
NODE_COLUMNS = (
    "name, incarnation, created_on, last_heartbeat, lease_timeout, state, fence_until, process,"
    " capacity, drained_at, drain_until, drain_note"
)
TOKEN_COLUMNS = "token_id, node, incarnation, epoch, pending_to, pending_deadline"
LOCK_COLUMNS = "task_key, token, patterns, reason, created_by, created_at, expires_at"
AUDIT_COLUMNS = "task_key, date, node, incarnation, token, epoch, status, claimed_at, completed_at"
HISTORY_COLUMNS = (
    "generation, leader, at, trigger, nodes_before, nodes_after, moved, unowned, duration_ms, hot"
)
REQUIRED_COLUMNS = {
    table: {c.strip() for c in columns.split(",")}
    for table, columns in (
        ("sync_site", SITE_COLUMNS),
        ("sync_node", NODE_COLUMNS + ", site"),
        ("sync_token", TOKEN_COLUMNS + ", site"),
        ("sync_lock", LOCK_COLUMNS + ", site"),
        ("sync_history", HISTORY_COLUMNS + ", site"),
        ("sync_audit", AUDIT_COLUMNS + ", site, cost"),
    )
}


def prepare(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL and create, upgrade or check the schema, whoever comes first.

    Waits at most ``busy_timeout`` in all for the locks this needs.  ``conn``
    is in autocommit mode.  Raises SchemaError for a newer or damaged
    schema; sqlite3 errors propagate for the caller to translate.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:  # upserts (3.24) and json_each (JSON1)
        raise SchemaError(f"SQLite {sqlite3.sqlite_version} is too old: jobsync needs 3.24+")
    deadline = time.monotonic() + busy_timeout  # one budget for every wait of the open
    _enable_wal(conn, deadline)
    if _version(conn) == [SCHEMA_VERSION]:
        _check_columns(conn)
        return
    set_busy_timeout(conn, deadline - time.monotonic())
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        set_busy_timeout(conn, busy_timeout)
    try:
        _create_or_upgrade(conn)
        _check_columns(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """How long ``conn``'s statements wait for a lock another connection holds."""
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}").fetchall()


def _create_or_upgrade(conn: sqlite3.Connection) -> None:
    """Under the write lock: create version 1 if the file is fresh, then migrate.

    The version is read again here, under the lock: another process may have
    created or upgraded the file since this one looked.
    """
    found = _version(conn)
    if not found:
        for statement in DDL:
            conn.execute(statement)
        conn.execute("INSERT INTO sync_schema (version) VALUES (1)")
        current = 1
    elif len(found) == 1 and 1 <= found[0] <= SCHEMA_VERSION:
        current = found[0]
    else:
        raise SchemaError(
            f"SQLite schema version {found} found; this library needs {SCHEMA_VERSION}"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            try:
                conn.execute(statement)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise  # transient: the caller's translation says so
                raise SchemaError(
                    f"SQLite schema upgrade from version {version - 1} to {version} failed"
                    f" ({exc}); the file is left at version {current}"
                ) from exc
    if current != SCHEMA_VERSION:
        conn.execute("UPDATE sync_schema SET version = ?", (SCHEMA_VERSION,))


def _version(conn: sqlite3.Connection) -> list[int] | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_schema'"
    ).fetchone()
    if exists is None:
        return None
    return [row[0] for row in conn.execute("SELECT version FROM sync_schema")]


def _enable_wal(conn: sqlite3.Connection, deadline: float) -> None:
    # Switching the journal mode needs an exclusive lock and may answer "locked"
    # without waiting for the busy handler when several processes do it at once.
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _check_columns(conn: sqlite3.Connection) -> None:
    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    for table, needed in REQUIRED_COLUMNS.items():
        missing = needed - set(db[table].columns_dict)
        if missing:
            raise SchemaError(f"SQLite table {table} lacks columns {sorted(missing)}")
