"""The SQLite backend's SQL statements (text only: the mixins run them).

A statement about one site takes ``site`` as its first parameter.  Columns are selected
in the orders ``schema`` lists (``SITE_COLUMNS``, ``TOKEN_COLUMNS``, ...), the
orders ``rows`` reads them in.  Lists of keys or tokens travel as one JSON
array (``json_each``), so a statement's text never depends on a list's length.
"""

from __future__ import annotations

from jobsync.backends.sqlite.schema import (
    AUDIT_COLUMNS,
    HISTORY_COLUMNS,
    LOCK_COLUMNS,
    NODE_COLUMNS,
    SITE_COLUMNS,
    TOKEN_COLUMNS,
)

SELECT_SITE = f"SELECT {SITE_COLUMNS} FROM sync_site WHERE site = ?"
LIST_SITES = "SELECT site FROM sync_site ORDER BY site"
SELECT_NODES = f"SELECT {NODE_COLUMNS} FROM sync_node WHERE site = ?"
SELECT_NODE = f"{SELECT_NODES} AND name = ?"  # by the primary key: one row
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
    " lease_timeout, state, fence_until, process, capacity, drained_at, drain_until,"
    " drain_note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SET_NODE_PLAN_INPUTS = (  # what an operator or the node itself changes: capacity and drain
    "UPDATE sync_node SET capacity = ?3, drained_at = ?4, drain_until = ?5, drain_note = ?6"
    " WHERE site = ?1 AND name = ?2"
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
    "UPDATE sync_audit SET status = 'done', completed_at = ?5, cost = ?6 WHERE site = ?1"
    " AND date = ?2"
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
SELECT_COMPLETIONS = (
    "SELECT token, claimed_at, completed_at, cost FROM sync_audit"
    " WHERE site = ?1 AND status = 'done' AND completed_at > ?2 ORDER BY completed_at LIMIT ?3"
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
    f"INSERT INTO sync_history (site, {HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
