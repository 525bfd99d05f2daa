"""The SQLite backend's schema, its SQL text, and pure functions over its rows.

Pure means no connection and no clock: the backend (``sqlite.py``) runs the
statements inside its transactions and passes ``now`` to the judgements at
the end of this module (lease expiry, leadership, what a plan writes).

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
``sync_node.process`` (version 2) is the registering process's identity.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_LEAVING,
    AuditRecord,
    HistoryEntry,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    PlanCommit,
    SiteInfo,
)
from jobsync.core import rules
from jobsync.core.errors import SchemaError

Row = tuple[Any, ...]
_RUNNING = (NODE_ACTIVE, NODE_LEAVING)
SCHEMA_VERSION = 2
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
}

SITE_COLUMNS = (
    "site, total_tokens, hash_function, generation, change_counter, plan_basis, created_at,"
    " signal, incarnation_seq, epoch_floor"
)
NODE_COLUMNS = (
    "name, incarnation, created_on, last_heartbeat, lease_timeout, state, fence_until, process"
)
TOKEN_COLUMNS = "token_id, node, incarnation, epoch, pending_to, pending_deadline"
_ID, _OWNER, _INC, _EPOCH, _DEST, _DEADLINE = TOKEN_POSITIONS = tuple(range(6))
LOCK_COLUMNS = "task_key, token, patterns, reason, created_by, created_at, expires_at"
AUDIT_COLUMNS = "task_key, date, node, incarnation, token, epoch, status, claimed_at, completed_at"
HISTORY_COLUMNS = (
    "generation, leader, at, trigger, nodes_before, nodes_after, moved, unowned, duration_ms"
)
REQUIRED_COLUMNS = {
    table: {c.strip() for c in columns.split(",")}
    for table, columns in (
        ("sync_site", SITE_COLUMNS),
        ("sync_node", NODE_COLUMNS + ", site"),
        ("sync_token", TOKEN_COLUMNS + ", site"),
        ("sync_lock", LOCK_COLUMNS + ", site"),
        ("sync_history", HISTORY_COLUMNS + ", site"),
        ("sync_audit", AUDIT_COLUMNS + ", site"),
    )
}

# -- statements (site is always the first parameter) ----------------------------
SELECT_SITE = f"SELECT {SITE_COLUMNS} FROM sync_site WHERE site = ?"
SELECT_NODES = f"SELECT {NODE_COLUMNS} FROM sync_node WHERE site = ?"
INSERT_SITE = (
    "INSERT INTO sync_site (site, total_tokens, hash_function, epoch_floor, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
INSERT_TOKENS = (  # ?1 site, ?2 total, ?3 epoch: one statement, no Python loop
    "INSERT INTO sync_token (site, token_id, epoch) SELECT ?1, i, ?3 FROM"
    " (WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?2)"
    " SELECT i FROM seq)"
)
RESET_SITE = (
    "UPDATE sync_site SET total_tokens = ?2, hash_function = ?3, epoch_floor = ?4,"
    " generation = generation + 1 WHERE site = ?1"
)
BUMP = (
    "UPDATE sync_site SET change_counter = change_counter + 1, signal = signal + 1 WHERE site = ?"
)
RAISE_BASIS = (
    "UPDATE sync_site SET plan_basis = MAX(plan_basis, ?2), signal = signal + 1 WHERE site = ?1"
)
NEW_GENERATION = (
    "UPDATE sync_site SET generation = ?2, plan_basis = MAX(plan_basis, ?3) WHERE site = ?1"
)
TAKE_INCARNATION = "UPDATE sync_site SET incarnation_seq = ?2 WHERE site = ?1"
UPSERT_NODE = (
    "INSERT OR REPLACE INTO sync_node (site, name, incarnation, created_on, last_heartbeat,"
    " lease_timeout, state, fence_until, process) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
RENEW = "UPDATE sync_node SET last_heartbeat = ?3 WHERE site = ?1 AND name = ?2"
SET_STATE = "UPDATE sync_node SET state = ?3 WHERE site = ?1 AND name = ?2"
MARK_DEAD = (
    "UPDATE sync_node SET state = 'dead' WHERE site = ?1 AND name = ?2 AND incarnation = ?3"
    " AND state IN ('active', 'leaving')"
)
DELETE_NODE = "DELETE FROM sync_node WHERE site = ? AND name = ?"
BURY_NODE = (  # a deregistration that keeps its row as a tombstone: the fence stays
    "UPDATE sync_node SET state = 'dead' WHERE site = ?1 AND name = ?2 AND incarnation = ?3"
)
NAMED_BY_TOKENS = "SELECT DISTINCT node FROM sync_token WHERE site = ? AND node IS NOT NULL"
PURGE_NODE = (  # ?3 incarnation: the row deleted is the one judged, not a newer one
    "DELETE FROM sync_node WHERE site = ?1 AND name = ?2 AND incarnation = ?3"
)
SELECT_TOKENS = (
    "SELECT node, incarnation, epoch, pending_to, pending_deadline FROM sync_token"
    " WHERE site = ? ORDER BY token_id"
)
SELECT_SOME_TOKENS = (
    f"SELECT {TOKEN_COLUMNS} FROM sync_token WHERE site = ?"
    " AND token_id IN (SELECT value FROM json_each(?))"
)
SELECT_PENDING = (
    f"SELECT {TOKEN_COLUMNS} FROM sync_token WHERE site = ? AND pending_deadline IS NOT NULL"
)
SELECT_OWNED = (
    "SELECT token_id, epoch, pending_deadline FROM sync_token"
    " WHERE site = ?1 AND incarnation = ?3 AND node = ?2 ORDER BY token_id"
)
COUNT_INCOMING = (  # releases destined to the name, and rows still under an older incarnation
    "SELECT COUNT(*) FROM sync_token WHERE site = ?1 AND ((pending_deadline IS NOT NULL"
    " AND pending_to = ?2) OR (node = ?2 AND incarnation IS NOT ?3))"
)
MAX_EPOCH = "SELECT MAX(epoch) + 1 FROM sync_token WHERE site = ?"
UPDATE_TOKEN = (
    "UPDATE sync_token SET node = ?2, incarnation = ?3, epoch = ?4, pending_to = ?5,"
    " pending_deadline = ?6 WHERE site = ?1 AND token_id = ?7"
)
FREE_TOKENS = (
    "UPDATE sync_token SET node = NULL, incarnation = NULL, epoch = epoch + 1,"
    " pending_to = NULL, pending_deadline = NULL WHERE site = ? AND incarnation = ?"
)
DELETE_TOKENS = "DELETE FROM sync_token WHERE site = ?"
OVERDUE = (
    "SELECT DISTINCT node, incarnation FROM sync_token WHERE site = ?"
    " AND pending_deadline IS NOT NULL AND pending_deadline <= ?"
)
INSERT_CLAIM = (
    "INSERT OR IGNORE INTO sync_audit (site, date, task_key, node, incarnation, token, epoch,"
    " status, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'claimed', ?)"
)
OPEN_CLAIM_OF = (
    "SELECT 1 FROM sync_audit WHERE site = ? AND date = ? AND task_key = ? AND incarnation = ?"
    " AND status = 'claimed'"
)
COMPLETE = (
    "UPDATE sync_audit SET status = 'done', completed_at = ?5 WHERE site = ?1 AND date = ?2"
    " AND task_key = ?3 AND incarnation = ?4 AND status = 'claimed'"
)
RELEASE = (
    "DELETE FROM sync_audit WHERE site = ?1 AND date = ?2 AND task_key = ?3"
    " AND incarnation = ?4 AND status = 'claimed'"
)
OPEN_CLAIMS = (
    "SELECT task_key FROM sync_audit WHERE site = ?1 AND date = ?2 AND incarnation = ?3"
    " AND status = 'claimed' AND task_key IN (SELECT value FROM json_each(?4))"
)
RELEASE_CLAIMS = "DELETE FROM sync_audit WHERE site = ? AND incarnation = ? AND status = 'claimed'"
RELEASE_ALL_CLAIMS = "DELETE FROM sync_audit WHERE site = ? AND status = 'claimed'"
OPEN_CLAIMERS = (
    "SELECT DISTINCT node, incarnation FROM sync_audit WHERE site = ? AND status = 'claimed'"
)
SELECT_AUDIT = (
    f"SELECT {AUDIT_COLUMNS} FROM sync_audit WHERE site = ?1 AND date = ?2"
    " AND (?3 IS NULL OR node = ?3) ORDER BY task_key"
)
# Whoever registers a lock last owns it; an existing lock keeps its created_at
# (expired ones are purged first, so re-registering one starts anew).
UPSERT_LOCK = (
    f"INSERT INTO sync_lock (site, {LOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (site, task_key) DO UPDATE SET token = excluded.token,"
    " patterns = excluded.patterns, reason = excluded.reason,"
    " created_by = excluded.created_by, expires_at = excluded.expires_at"
)
SELECT_LOCKS = (
    f"SELECT {LOCK_COLUMNS} FROM sync_lock WHERE site = ?"
    " AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, task_key"
)
LOCK_KEYS = "SELECT task_key FROM sync_lock WHERE site = ?"
RETOKEN_LOCK = "UPDATE sync_lock SET token = ?3 WHERE site = ?1 AND task_key = ?2"
PURGE_LOCKS = "DELETE FROM sync_lock WHERE site = ? AND expires_at <= ?"
CLEAR_OTHER_LOCKS = (
    "DELETE FROM sync_lock WHERE site = ? AND created_by = ?"
    " AND task_key NOT IN (SELECT value FROM json_each(?))"
)
CLEAR_LOCKS = "DELETE FROM sync_lock WHERE site = ?1 AND (?2 IS NULL OR created_by = ?2)"
INSERT_HISTORY = (
    f"INSERT INTO sync_history (site, {HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_HISTORY = (
    f"SELECT {HISTORY_COLUMNS} FROM sync_history WHERE site = ? ORDER BY id DESC LIMIT ?"
)
PRUNE = {  # batches by rowid; open claims are never pruned
    "audit": "DELETE FROM sync_audit WHERE rowid IN (SELECT rowid FROM sync_audit"
    " WHERE site = ? AND status = 'done' AND completed_at < ? LIMIT ?)",
    "history": "DELETE FROM sync_history WHERE rowid IN (SELECT rowid FROM sync_history"
    " WHERE site = ? AND at < ? LIMIT ?)",
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


# -- rows <-> values ---------------------------------------------------------------
def site_info(row: Row) -> SiteInfo:
    return SiteInfo(
        site=row[0], total_tokens=row[1], hash_function=row[2], generation=row[3],
        change_counter=row[4], plan_basis=row[5], created_at=row[6],
    )  # fmt: skip


def node(row: Row) -> NodeRecord:
    return NodeRecord(
        name=row[0], incarnation=row[1], registered_at=row[2], last_heartbeat=row[3],
        lease_timeout=row[4], state=row[5], fence_until=row[6], process=row[7],
    )  # fmt: skip


def lock(row: Row) -> LockRecord:
    return LockRecord(
        task_key=row[0], token=row[1], patterns=tuple(json.loads(row[2])), reason=row[3],
        created_by=row[4], created_at=row[5], expires_at=row[6],
    )  # fmt: skip


def lock_params(site: str, creator: str, spec: LockSpec, now: float) -> Row:
    expires = None if spec.expires_in is None else now + spec.expires_in
    patterns = json.dumps(list(spec.patterns))
    return (site, spec.task_key, spec.token, patterns, spec.reason, creator, now, expires)


def audit(row: Row) -> AuditRecord:
    return AuditRecord(
        task_key=row[0], date=datetime.date.fromisoformat(row[1]), node=row[2],
        incarnation=row[3], token=row[4], epoch=row[5], status=row[6], claimed_at=row[7],
        completed_at=row[8],
    )  # fmt: skip


def history(row: Row) -> HistoryRecord:
    entry = HistoryEntry(
        trigger=row[3], nodes_before=tuple(json.loads(row[4])),
        nodes_after=tuple(json.loads(row[5])), moved=row[6], unowned=row[7], duration_ms=row[8],
    )  # fmt: skip
    return HistoryRecord(generation=row[0], leader=row[1], at=row[2], entry=entry)


def history_params(site: str, record: HistoryRecord) -> Row:
    e = record.entry
    return (
        site, record.generation, record.leader, record.at, e.trigger,
        json.dumps(list(e.nodes_before)), json.dumps(list(e.nodes_after)), e.moved, e.unowned,
        e.duration_ms,
    )  # fmt: skip


# -- judgements and token-row arithmetic (pure; rows as TOKEN_COLUMNS) --------------
def running(node: NodeRecord | None, incarnation: int) -> bool:
    return node is not None and node.incarnation == incarnation and node.state in _RUNNING


class TokenColumns:
    """Token rows read by id, seen as the columns ``rules.plan_misfit`` indexes."""

    def __init__(self, rows: Mapping[int, Row]) -> None:
        self.owner = _Column(rows, _OWNER)
        self.incarnation = _Column(rows, _INC)
        self.epoch = _Column(rows, _EPOCH)


class _Column:
    def __init__(self, rows: Mapping[int, Row], index: int) -> None:
        self._rows, self._index = rows, index

    def __getitem__(self, token: int) -> Any:
        return self._rows[token][self._index]


def plan_rows(
    site: str, commit: PlanCommit, rows: Mapping[int, Row], now: float
) -> tuple[list[Row], set[tuple[str, int]]]:
    """The token rows a plan changes (UPDATE_TOKEN parameters), and the incarnations it
    takes tokens from directly; the plan was already checked (``rules.plan_misfit``)."""
    updates: list[Row] = []
    dead: set[tuple[str, int]] = set()
    for a in commit.assigns:
        row = rows[a.token]
        if row[_INC] is not None:
            dead.add((row[_OWNER], row[_INC]))
        updates.append((site, a.owner, a.incarnation, row[_EPOCH] + 1, None, None, a.token))
    for r in commit.revokes:
        row = rows[r.token]
        deadline = row[_DEADLINE]
        if deadline is None or row[_DEST] != r.destination:  # the deadline never moves
            deadline = now + commit.ack_timeout if deadline is None else deadline
            updates.append((site, *row[_OWNER:_DEST], r.destination, deadline, r.token))
    return updates, dead


def handoff(site: str, row: Row, nodes: Mapping[str, NodeRecord], now: float) -> Row:
    """A finished release: to the destination's live incarnation, else unowned."""
    dest = nodes.get(row[_DEST]) if row[_DEST] is not None else None
    owner, incarnation = rules.destination(dest, now) or (None, None)
    return (site, owner, incarnation, row[_EPOCH] + 1, None, None, row[_ID])
